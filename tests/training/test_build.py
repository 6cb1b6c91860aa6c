"""Building a run (harness.training.build): what runs of one process share and what they do not."""

from pathlib import Path

from harness.config.run import RunSpec
from harness.registry.loading import load_plugin
from harness.training.build import RunInputs, build_run

STALLING = Path(__file__).parents[1] / "fixtures" / "stalling_data.py"


def test_each_run_draws_from_its_own_dataset_so_a_stateful_one_starts_afresh():
    """A dataset that counts its batches (as a plugin with a cursor does) must not hand the
    second run of a process the state the first left behind."""
    load_plugin(str(STALLING))
    spec = RunSpec(model=dict(n_layer=1, d_model=16, n_head=2, context_length=16),
                   data={"dataset": {"name": "stalling", "stall_after": 100, "stall_s": 0}, "val_windows": 2})
    inputs = RunInputs()
    first = build_run(spec, inputs)
    for _ in range(3):
        first.dataset.train_batch(2, 16, None)
    second = build_run(spec, inputs)
    assert (first.dataset.drawn, second.dataset.drawn) == (3, 0)
    assert inputs.dataset(spec).drawn == 0, "the instance the plan reads is never drawn from"
