"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""


class UsageError(Exception):
    """Bad flag, hostfile, selector or config. The message names the problem and the fix."""

    exit_code = 2
