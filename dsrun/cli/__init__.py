"""The `dsrun` command line: the launch command (launch.py) and the tools beside it (tools.py). No torch."""

from dsrun.cli.launch import main

__all__ = ["main"]
