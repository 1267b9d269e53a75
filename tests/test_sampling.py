"""Seeded sampling on the device: its distribution, per-row independence, batch sizes."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_mistral

from harness.errors import HarnessValueError
from harness.sampling import CPU_MAX_BATCH, SeededSampler, batch_rows


def test_top_1_picks_the_argmax():
    scores = torch.randn(4, 50)
    out = SeededSampler([0, 1, 2, 3], temperature=0.8, top_k=1, steps=1)(None, scores)
    assert torch.equal(out.argmax(-1), scores.argmax(-1))
    assert torch.isinf(out).sum() == 4 * 49


def test_draws_follow_the_softmax_at_the_temperature():
    """Each row is one independent draw: 6000 seeds give 6000 samples of the distribution."""
    scores = torch.tensor([[0.0, 1.0, 2.0]]).expand(6000, -1)
    temperature = 0.8
    draws = SeededSampler(range(6000), temperature=temperature, top_k=None, steps=1)(None, scores).argmax(-1)
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(scores[0] / temperature, -1), atol=0.02)


def test_successive_steps_of_one_row_follow_the_softmax_too():
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    sampler = SeededSampler([7], temperature=1.0, top_k=None, steps=6000)
    draws = torch.tensor([int(sampler(None, scores).argmax()) for _ in range(6000)])
    freq = torch.bincount(draws, minlength=3).float() / 6000
    assert torch.allclose(freq, torch.softmax(scores[0], -1), atol=0.02)


def test_a_rows_draws_depend_on_its_seed_only():
    scores = torch.randn(1, 300).expand(5, -1)
    alone = SeededSampler([42], 0.8, None, steps=1)(None, scores[:1]).argmax(-1)
    batched = SeededSampler([1, 2, 42, 3, 4], 0.8, None, steps=1)(None, scores).argmax(-1)
    assert batched[2] == alone[0]


def test_top_k_never_samples_outside_the_k_best():
    scores = torch.randn(2000, 40)
    out = SeededSampler(range(2000), 1.0, top_k=3, steps=1)(None, scores).argmax(-1)
    best = torch.topk(scores, 3, dim=-1).indices
    assert bool((best == out[:, None]).any(-1).all())


def test_refusals():
    with pytest.raises(HarnessValueError, match="temperature"):
        SeededSampler([0], 0.0, None, steps=1)
    sampler = SeededSampler([0], 1.0, None, steps=1)
    sampler(None, torch.zeros(1, 3))
    with pytest.raises(HarnessValueError, match="step 2 of 1"):
        sampler(None, torch.zeros(1, 3))


def test_batch_rows_on_the_cpu_and_the_override():
    model, _ = tiny_mistral()
    assert batch_rows(model, 100) == CPU_MAX_BATCH
    assert batch_rows(model, 100, max_batch=7) == 7
    with pytest.raises(HarnessValueError, match="--max-batch 0"):
        batch_rows(model, 100, max_batch=0)


def test_a_uniform_of_exactly_one_under_top_k_picks_the_last_kept_token_never_a_cut_one():
    """1 - U(0, 1) can be exactly 1.0: the target is then the whole mass, reached first at the
    last kept token in vocabulary order; every later token adds 0 to the CDF and must not win."""
    scores = torch.tensor([[0.0, 2.0, -1.0, 3.0, 0.5, 2.5, -2.0, 1.0]])  # top 3: ids 1, 3, 5
    sampler = SeededSampler([0], temperature=1.0, top_k=3, steps=1)
    sampler.uniforms = torch.ones(1, 1, dtype=torch.float64)
    chosen = int(sampler(torch.zeros(1, 1, dtype=torch.long), scores).argmax())
    assert chosen == 5
