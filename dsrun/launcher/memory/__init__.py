"""The dry run's memory estimate (no torch): per-rank model state of each ZeRO stage, the nodes' memory, the verdicts.

A --model is measured by `python -m dsrun.probe` in its own process (probe_client.py), never imported here.
"""
