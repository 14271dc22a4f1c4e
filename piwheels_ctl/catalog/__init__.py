"""What the farm tracks: the projects and versions wanted, kept in step with the upstream index."""
