"""Training one run (configured by harness.config.train): optimizer and schedule, checkpoints, the loop, what it tells
its observers, and stop requests (interrupt.py: Ctrl-C, SIGTERM, SLURM's warning signal)."""
