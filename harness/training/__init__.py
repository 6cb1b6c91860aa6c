"""Training one run (configured by harness.config.train): build.py builds it in one place (its
data, starting weights, model, optimizer and step, used by the trainer and the estimate);
optimizer and schedule, checkpoints, the loop, what it tells its observers, and stop
requests (interrupt.py: Ctrl-C, SIGTERM, SLURM's warning signal)."""
