"""A run's folder: its checkpoints, resuming into it, exporting from it."""
