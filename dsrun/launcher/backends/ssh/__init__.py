"""Hosts reached over SSH with paramiko: ~/.ssh/config, connections, one session (node agent) per host, the job."""
