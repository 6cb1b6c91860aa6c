"""`python -m harness.cli`: the `ablate` command (as torchrun and srun start it)."""

from harness.cli import main

if __name__ == "__main__":
    main()
