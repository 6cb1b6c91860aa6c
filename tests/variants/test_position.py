"""Position variants: embedding, rotation and bias hooks."""

import torch

from harness.registry import lookup
from tests.conftest import tiny_config, tiny_model


def _rope():
    cfg = tiny_config(position="rope")
    return lookup("position", "rope").factory(cfg, cfg.options("position"))


def test_rope_scores_depend_only_on_the_relative_offset():
    rope = _rope()
    q, k = torch.randn(2, 1, 1, 1, 8).unbind(0)

    def score(q_pos, k_pos):
        rq, _ = rope.rotate(q, q, torch.tensor([q_pos]))
        _, rk = rope.rotate(k, k, torch.tensor([k_pos]))
        return (rq * rk).sum()

    torch.testing.assert_close(score(5, 2), score(12, 9))
    torch.testing.assert_close(score(3, 3), score(0, 0))
    assert not torch.allclose(score(5, 2), score(5, 4))


def test_rope_preserves_vector_norms():
    rope = _rope()
    q = torch.randn(2, 4, 10, 8)
    rq, _ = rope.rotate(q, q, torch.arange(10))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))


def test_alibi_bias_is_minus_slope_times_distance():
    model = tiny_model(position="alibi")
    bias = model.position.attention_bias(torch.arange(4), torch.arange(4))
    slopes = model.position.slopes
    assert slopes.tolist() == [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]  # 4 heads: 2^(-8/4 * i)
    torch.testing.assert_close(bias[:, 3, 0], -3 * slopes)
    assert (bias[:, 1, 1] == 0).all()


def test_alibi_slopes_for_a_head_count_that_is_not_a_power_of_two():
    from variants.position import alibi_slopes

    slopes = alibi_slopes(6)
    assert slopes[:4] == alibi_slopes(4) and slopes[4:] == alibi_slopes(8)[0:4:2]


def test_sinusoidal_table_alternates_sine_and_cosine():
    table = tiny_model(position="sinusoidal").position.table
    assert torch.equal(table[0, 0::2], torch.zeros(16)) and torch.equal(table[0, 1::2], torch.ones(16))
    torch.testing.assert_close(table[3, 0], torch.sin(torch.tensor(3.0)))


def test_only_learned_positions_add_parameters():
    learned = tiny_model(position="learned").num_parameters()
    for name in ["rope", "alibi", "sinusoidal", "none"]:
        assert learned - tiny_model(position=name).num_parameters() == 16 * 32


def test_without_positions_the_model_cannot_tell_a_permuted_prefix():
    # NoPE: causal attention alone; the last logit sees a bag of earlier tokens
    model = tiny_model(position="none", n_layer=1).eval()
    idx = torch.tensor([[1, 2, 3, 4, 5]])
    swapped = torch.tensor([[2, 1, 3, 4, 5]])
    torch.testing.assert_close(model(idx)[0][:, -1], model(swapped)[0][:, -1])
    learned = tiny_model(position="learned", n_layer=1).eval()
    assert not torch.allclose(learned(idx)[0][:, -1], learned(swapped)[0][:, -1])
