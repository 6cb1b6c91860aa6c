"""A model trained with our Triton kernels follows the same curve as with torch's."""

import pytest
import torch

from harness.config.run import RunSpec
from harness.training.trainer import Trainer
from tests.conftest import tiny_model

pytest.importorskip("triton", reason="the Triton kernels need triton (pip install -e '.[test]')")

FUSED = dict(norm="rmsnorm", mlp="swiglu", position="rope")
KERNELS = {
    "rmsnorm": dict(kernels={"rmsnorm": "triton"}),
    "swiglu": dict(kernels={"swiglu": "triton"}),
    "attention": dict(attention_backend="triton"),
}


def _spec(tmp_path, **model) -> RunSpec:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    return RunSpec(model=dict(n_layer=2, d_model=32, n_head=4, context_length=16, **FUSED, **model),
                   train=dict(steps=4, batch_size=2, log_interval=1, eval_interval=2, device="cpu", compile=False,
                              lr=1e-2),
                   data=dict(dataset={"name": "text", "path": str(corpus)}, val_windows=2))


@pytest.mark.parametrize("which", list(KERNELS))
def test_training_with_a_triton_kernel_follows_the_torch_curve(tmp_path, which):
    torch_run = Trainer(_spec(tmp_path), tmp_path / "torch").run(resume=False)
    triton_run = Trainer(_spec(tmp_path, **KERNELS[which]), tmp_path / "triton").run(resume=False)
    curve = [(h["step"], h.get("train_loss"), h.get("val_loss")) for h in torch_run.history]
    fused = [(h["step"], h.get("train_loss"), h.get("val_loss")) for h in triton_run.history]
    assert [c[0] for c in curve] == [c[0] for c in fused]
    for (_, *want), (_, *got) in zip(curve, fused):
        for w, g in zip(want, got):
            assert (w is None) == (g is None)
            if w is not None:
                assert abs(w - g) < 1e-4, f"{which}: {curve} vs {fused}"
    # the run records what computed each op
    recorded = "attention_backend" if which == "attention" else f"kernel_{which}"
    assert triton_run.info[recorded] == "triton"
    assert torch_run.info["kernel_rmsnorm"] == "torch" and torch_run.info["attention_backend"] == "sdpa"


def test_the_model_reports_each_kernel_and_its_fallbacks(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    model = tiny_model(norm="rmsnorm", mlp="swiglu", kernels={"rmsnorm": "triton"}).eval()
    model(torch.randint(0, 32, (1, 8)))
    report = model.kernel_report()
    assert report["kernel_rmsnorm"] == "torch"
    assert "Triton kernels need CUDA" in report["kernel_rmsnorm_fallbacks"]
    assert report["kernel_swiglu"] == "torch" and "kernel_swiglu_fallbacks" not in report
