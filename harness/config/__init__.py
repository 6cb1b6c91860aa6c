"""The floor of the house: the typed settings and records every other package speaks, with
no knowledge of how a run trains, is tracked or is reported (it imports only the registry,
which validates variant names, and the small shared modules beside it).

    model.py      ModelConfig: sizes, switches and one variant per slot
    train.py      TrainConfig: steps, batch, optimizer, schedule, execution
    data.py       DataConfig, TokenizerConfig: the dataset, its tokenizer, the validation split
    run.py        RunSpec: one run resolved (model, train, data, seed), with its identity
    run_state.py  the one vocabulary of run states (MLflow tags, Optuna trial states)
    paths.py      dotted paths (model.norm, train.lr) into nested settings: arms, --set, profiles
    study.py      StudySpec: the YAML study, validated before anything runs, and each arm's run
    records.py    PlanRecord: what an execution set out to train, the one contract between the
                  study that writes it, the tracker that keeps it and the report that reads it
"""
