"""--live: a table of every rank, redrawn in place while the job runs, the workers' output scrolling above it. No
torch."""
