"""ablate's engine: does this block change actually help?

    from harness import Study
    summary = Study.load("studies/norm_placement.yaml").run()

The packages follow a study's data flow:

    config/     the floor: model, train, data and study settings, the run spec, run states
    study/      a study's plan, the ledger and workers, tuning, one run lifecycle, Study
    model/      the GPT assembled from slots, attention backends, generation, HF weights
    kernels/    our Triton kernels beside their torch references
    data/       datasets and tokenizers
    training/   the training loop of one run, checkpoints, faults
    tracking/   MLflow: runs, their records, the outbox that keeps them through outages
    report/     statistics, markdown, CSV and figures rebuilt from MLflow
    registry/   slots and variants: what plugins (and the built-in `variants` package) use
    bench/      benchmarks printing ratios measured in one process
    cli/        the `ablate` command: parses arguments, calls the above, prints

The engine never imports a variant: variants reach the registry through the `ablate.variants`
entry points, like any plugin. It names a few by their registered names only where a
configuration must: the model's defaults (the GPT-2 block) and the Hugging Face mappings.
"""

__version__ = "0.1.0"

__all__ = ["Study", "__version__"]


def __getattr__(name: str):
    # Study pulls in MLflow, Optuna and torch: only when asked for, so that a plugin importing
    # harness.registry stays light
    if name == "Study":
        from harness.study.study import Study

        return Study
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
