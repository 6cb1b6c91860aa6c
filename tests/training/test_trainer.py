"""The training loop: learning, determinism, resume, divergence, fine-tuning."""

import math

import pytest

from harness.config.run import RunSpec
from harness.training.observer import Observer
from harness.training.slowdown import SlowdownWatch
from harness.training.trainer import Trainer

SMALL_MODEL = dict(n_layer=2, d_model=64, n_head=4, context_length=64)


def _spec(seed=0, model=None, data=None, **train):
    settings = dict(steps=30, batch_size=8, log_interval=5, eval_interval=10)
    settings.update(train)
    return RunSpec(seed=seed, model={**SMALL_MODEL, **(model or {})}, train=settings,
                   data={"val_windows": 16, **(data or {})})


def _losses(history, key="train_loss"):
    return [entry[key] for entry in history if key in entry]


class StopAt(Observer):
    """An observer that interrupts the run at its first metrics after the checkpoint at `step`."""

    def __init__(self, step):
        self.step = step

    def on_metrics(self, step, metrics):
        if step > self.step:
            raise KeyboardInterrupt


def test_val_loss_falls_well_below_the_unigram_loss_on_pydoc(tmp_path):
    result = Trainer(_spec(steps=250, batch_size=16, lr=3e-3, eval_interval=250, data={"val_windows": 128}),
                     tmp_path).run()
    assert result.status == "finished"
    assert result.metrics["val_loss"] < result.info["unigram_loss"] - 0.5
    assert result.info["bigram_loss"] < result.info["unigram_loss"]


def test_two_digit_addition_reaches_90_percent_exact_match(tmp_path):
    spec = _spec(model=dict(n_layer=2, d_model=64, context_length=9),
                 data={"dataset": {"name": "addition", "digits": 2}},
                 steps=1000, batch_size=64, lr=5e-3, warmup_steps=30, weight_decay=0.0,
                 log_interval=100, eval_interval=500)
    result = Trainer(spec, tmp_path).run()
    assert result.metrics["val_exact_match"] >= 0.9


def test_the_same_seed_gives_the_same_curve_and_another_seed_another(tmp_path):
    first = Trainer(_spec(seed=1), tmp_path / "a").run().history
    again = Trainer(_spec(seed=1), tmp_path / "b").run().history
    other = Trainer(_spec(seed=2), tmp_path / "c").run().history
    assert _losses(first) == _losses(again) and _losses(first, "val_loss") == _losses(again, "val_loss")
    assert _losses(first) != _losses(other)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_from_a_mid_run_checkpoint_continues_the_same_curve(tmp_path, dropout):
    spec = _spec(steps=30, checkpoint_interval=15, model={"dropout": {"name": "constant", "p": dropout}})
    uninterrupted = Trainer(spec, tmp_path / "whole").run()
    with pytest.raises(KeyboardInterrupt):
        Trainer(spec, tmp_path / "split", StopAt(15)).run()
    resumed = Trainer(spec, tmp_path / "split").run()
    assert resumed.metrics["steps_trained"] == 15
    assert _losses(resumed.history) == _losses(uninterrupted.history)
    assert _losses(resumed.history, "val_loss") == _losses(uninterrupted.history, "val_loss")


def test_a_huge_learning_rate_is_detected_as_diverged_and_the_curve_is_kept(tmp_path):
    result = Trainer(_spec(steps=200, lr=50.0, grad_clip=0.0, log_interval=2), tmp_path).run()
    assert result.status == "diverged"
    assert "non-finite" in result.reason or "exceeds" in result.reason
    assert result.steps < 200 and len(_losses(result.history)) >= 1


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    large = Trainer(_spec(steps=5, batch_size=8, grad_accum=1, log_interval=1), tmp_path / "a").run()
    # the same 8 sequences, split in two micro-batches of 4, drawn from the same generator in order
    accumulated = Trainer(_spec(steps=5, batch_size=4, grad_accum=2, log_interval=1), tmp_path / "b").run()
    assert _losses(large.history)[0] == pytest.approx(_losses(accumulated.history)[0], rel=1e-5)


def test_init_from_a_checkpoint_fine_tunes_on_another_corpus(tmp_path):
    pretrained = Trainer(_spec(steps=120, batch_size=16, eval_interval=120), tmp_path / "pre")
    pretrained.run()
    corpus = tmp_path / "corpus.txt"
    val = pretrained.dataset.tokens["val"]
    corpus.write_text(pretrained.dataset.tokenizer.decode(val.head(20000)))  # characters the vocabulary has
    data = {"dataset": {"name": "text", "path": str(corpus)}}
    scratch = Trainer(_spec(steps=5, eval_interval=5, data=data, lr=1e-4), tmp_path / "scratch").run()
    tuned = Trainer(_spec(steps=5, eval_interval=5, data=data, lr=1e-4,
                          init_from=str(tmp_path / "pre" / "checkpoint.pt")), tmp_path / "tuned").run()
    assert tuned.info["vocab_size"] == pretrained.dataset.vocab_size
    assert tuned.metrics["val_loss"] < scratch.metrics["val_loss"] - 0.5


def test_metrics_carry_throughput_and_tokens(tmp_path):
    result = Trainer(_spec(steps=10), tmp_path).run()
    # the run's throughput is every token over all its time, not the last interval's
    assert result.metrics["avg_tokens_per_s"] == pytest.approx(10 * 8 * 64 / result.metrics["wall_time_s"])
    entry = next(e for e in result.history if "train_loss" in e)
    assert entry["tokens"] == 5 * 8 * 64 and entry["tokens_per_s"] > 0 and entry["step_time_ms"] > 0
    assert "mfu" not in entry  # MFU is reported against a GPU's peak only
    assert math.isfinite(entry["grad_norm"]) and entry["lr"] > 0
    assert result.info["attention_backend"] == "sdpa"


def test_observers_hear_of_a_checkpoint_before_it_is_written(tmp_path):
    """So that the tracker can make the metrics up to it durable first: a crash right after
    the save must not leave the checkpoint ahead of what it resumes after."""
    from harness.training.checkpoint import load_checkpoint

    on_disk = []

    class Watcher(StopAt):
        def on_metrics(self, step, metrics): pass

        def before_checkpoint(self, step, path):
            on_disk.append((step, load_checkpoint(path)["step"] if path.exists() else None))

    Trainer(_spec(steps=30, checkpoint_interval=10), tmp_path, Watcher(0)).run()
    assert on_disk == [(10, None), (20, 10), (30, 20)]


def test_train_threads_sets_the_run_process_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        result = Trainer(_spec(steps=2, threads=1), tmp_path).run()
        assert result.info["execution"]["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_whose_steps_crawl_says_so_once(tmp_path):
    """Steps far slower than the run's own median for long (another process on the cores;
    here the data source stalls) are said once, to every observer."""
    import time

    notices = []

    class Listener(Observer):
        def on_notice(self, name, message):
            notices.append((name, message))

    trainer = Trainer(_spec(steps=60, log_interval=2, eval_interval=60), tmp_path, Listener())
    trainer.slowdown = SlowdownWatch(factor=3.0, patience_s=0.2)
    draw = trainer.dataset.train_batch
    calls = []

    def stalling(*args, **kwargs):
        calls.append(1)
        if len(calls) > 30:
            time.sleep(0.05)
        return draw(*args, **kwargs)

    trainer.dataset.train_batch = stalling
    trainer.run()
    assert len(notices) == 1 and notices[0][0] == "slowdown"
    assert "their usual time" in notices[0][1] and "train.threads" in notices[0][1]


def test_the_slowdown_watch_needs_a_long_slow_stretch():
    watch = SlowdownWatch(factor=3.0, patience_s=30)
    assert all(watch.observe(80, 1.0) is None for _ in range(10))
    assert watch.observe(400, 20) is None, "a slow stretch shorter than the patience is not news"
    assert watch.observe(85, 1.0) is None  # back to normal: the stretch starts over
    assert watch.observe(400, 20) is None
    message = watch.observe(420, 20)
    assert message.startswith("steps take 5.2x their usual time (420 ms, usually 80 ms) for 40 s")
    assert watch.observe(500, 60) is None, "said once"
