"""Running a WorldPlan: on this machine (local), over SSH with one node agent per host (ssh/), or inside a Slurm
allocation with one agent per node started by srun (slurm/). No torch."""
