"""Jobs inside a Slurm allocation: one srun step starting a node agent on every node."""
