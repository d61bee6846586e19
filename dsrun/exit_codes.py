"""The exit codes dsrun gives a job's end their own meaning (README "Exit codes"); torch-free, so the launcher and
the workers' runtime share them. Any other code is the first failing rank's own."""

USAGE_ERROR = 2  # a mistake in the command, the config or the script's call: one line names it
INTERNAL = 70  # EX_SOFTWARE: a bug in dsrun itself; one line says where the full traceback was written
# EX_TEMPFAIL from sysexits.h, "try again later": every rank stopped on SIGTERM after saving a checkpoint, and the
# job resumes from it (checkpoint.auto_resume) when started again.
PREEMPTED = 75
# --hang-timeout stopped the job (as timeout(1) exits when its command timed out).
HANG = 124
