"""A study, from its settings (harness.config.study) to its report, in the order a study runs:

    plan.py       arms x seeds (x scales) -> RunSpecs (one per run), the data they need, a time estimate
    matching.py   `match: params`: the baseline's parameter count for every arm
    staging.py    `init_from: {study, arm, seed}`: the checkpoint of another study's run
    ledger.py     the queue: every planned run an Optuna trial that workers claim
    tuning.py     per-arm tuning with Optuna before the comparison
    lifecycle.py  one run, opened to ended, the same for a comparison run and a tuning trial
    worker.py     a worker: claims runs from the ledger and trains them
    launch.py     local worker processes
    executors.py  how the planned runs execute: inline, local workers, plan only
    slurm.py      or as a SLURM job array (submitit): its executor and the job each worker runs
    seed_policy.py how many seeds each arm trains: fixed, or added while a verdict is unsettled
    status.py     where a study stands: per arm finished, running, queued, failed; an ETA
    clean.py      checkpoints and locks of runs that are settled
    study.py      Study: a handle on a study (by file or name) whose methods do all of the
                  above; every CLI command opens one, calls one method and prints
"""
