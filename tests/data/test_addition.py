"""The addition task."""

import pytest
import torch

from harness.config.data import DataConfig
from harness.data import load_dataset
from harness.errors import AblateError


def _task(digits=2):
    return load_dataset(DataConfig(dataset={"name": "addition", "digits": digits}))


def test_rows_are_operands_then_the_reversed_sum_and_only_the_answer_is_learned():
    task = _task()
    x, y = task.train_batch(16, 9, torch.Generator().manual_seed(0))
    for row_x, row_y in zip(x, y):
        text = task.tokenizer.decode(row_x.tolist()) + task.tokenizer.decode([int(row_y[-1])])
        a, rest = text.split("+")
        b, answer = rest.split("=")
        assert answer == str(int(a) + int(b)).zfill(3)[::-1] + "\n"
        assert (row_y[:5] == -1).all() and (row_y[5:] != -1).all()


def test_held_out_pairs_never_appear_in_training():
    task = _task()
    val = {task.tokenizer.decode(x.tolist())[:5] for xs, _ in task.eval_batches(100, 9) for x in xs}
    x, _ = task.train_batch(5000, 9, torch.Generator().manual_seed(1))
    train = {task.tokenizer.decode(row.tolist())[:5] for row in x}
    assert len(val) > 500 and not (val & train)


def test_context_too_short_for_the_rows_is_refused():
    import pytest

    with pytest.raises(ValueError, match="context_length >= 12"):
        _task(digits=3).check_context(8)


def test_a_split_without_operand_pairs_is_refused_instead_of_sampled_forever():
    with pytest.raises(AblateError, match="leaves none of them for validation"):
        load_dataset(DataConfig(dataset={"name": "addition", "digits": 1}))
    with pytest.raises(AblateError, match="leaves all of them for validation"):
        load_dataset(DataConfig(dataset={"name": "addition", "digits": 1, "val_fraction": 0.99}))
