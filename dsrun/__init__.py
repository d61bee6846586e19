"""dsrun: a launcher and job runner for PyTorch distributed training that speaks DeepSpeed's CLI and config.

Importing the package stays cheap (no torch): the launcher imports it on login nodes.
"""

__version__ = "0.1.0"
