"""What the dry run's memory estimate needs to know about a model, found by building it on the meta device.

Imports torch: it runs as its own process (`python -m dsrun.probe`), never inside the launcher.
"""
