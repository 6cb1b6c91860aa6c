"""MLflow tracking: experiment = study, one parent run per execution, one child run per run.

    tracker.py      the store: connection, experiments, an execution's parent run (its bracket and
                    heartbeat; dead executions ended KILLED), finding runs again
    tracked_run.py  one run's records (params, metrics, tags, texts) as its trainer produces them
    lineage.py      where a run's numbers come from: dataset input, source tags, plugins used
    outbox.py       records kept until the store has them: never lost to an outage or a crash
    outage.py       which errors are outages (waited for) and which refusals (said once, skipped)
"""
