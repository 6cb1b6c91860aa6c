"""Training one run: configuration, optimizer and schedule, checkpoints, the loop."""
