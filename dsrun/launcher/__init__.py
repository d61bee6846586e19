"""The launcher half of dsrun. Nothing under this package may import torch (start-up speed)."""
