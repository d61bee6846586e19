"""The training half of dsrun: the engine that applies the run config. Imports torch."""
