"""`python -m dsrun.launcher.node [--slurm]`: the node agent the launcher starts on every host (see agent.py)."""

import sys

from dsrun.launcher.node.agent import main

sys.exit(main())
