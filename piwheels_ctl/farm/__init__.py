"""Talking to builders from the controller: the registry, SSH and rsync, executors, probes, frontends."""
