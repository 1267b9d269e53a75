"""Per-prompt data of the runner: many prompts in one padded pass equal each prompt alone."""

from __future__ import annotations

import pytest
import torch

from harness.generate import Runner
from harness.kv import prefill
from harness.model import load_subject
from harness.patches import record
from harness.prompts import default_pairs
from harness.sites import Site


@pytest.fixture(scope="module")
def runner():
    return Runner(load_subject())


@pytest.fixture(scope="module")
def texts(runner):
    texts = [p.champion for p in default_pairs()[:3]] + [p.baseline for p in default_pairs()[:3]]
    assert len({runner.ids(t).shape[1] for t in texts}) > 1  # the padding varies
    return texts


@pytest.mark.parametrize("without_last", [False, True])
def test_caches_of_many_prompts_in_one_pass_equal_each_prompt_prefilled_alone(runner, texts, without_last):
    calls = []
    handle = runner.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        batched = runner.caches(texts, without_last=without_last)
    finally:
        handle.remove()
    assert len(calls) == 1
    for text, snap in zip(texts, batched):
        ids = runner.ids(text)[:, :-1] if without_last else runner.ids(text)
        alone = prefill(runner.model, ids)[1]
        assert snap.seq_len == ids.shape[1]
        for got, want in zip(snap.keys + snap.values, alone.keys + alone.values):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # float32 matmul order


def test_activations_of_many_prompts_in_one_pass_equal_each_prompt_recorded_alone(runner, texts):
    site = Site("v_proj", 27)
    for text, act in zip(texts, runner.activations(texts, site)):
        alone = record(runner.model, runner.layout, runner.ids(text), [site])[site]
        assert act.shape == alone.shape
        torch.testing.assert_close(act, alone, rtol=1e-5, atol=1e-5)


def test_left_padding_puts_each_row_at_the_end_with_its_mask(runner):
    rows = [torch.tensor([[5, 6, 7]]), torch.tensor([[8]])]
    ids, mask, pads = runner._left_padded(rows, [2, 1])
    assert pads == [0, 2]
    assert ids.tolist() == [[5, 6, 7], [5, 6, 7], [runner.pad_id, runner.pad_id, 8]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 1]]
    right, lengths = runner._right_padded([torch.tensor([[8]]), torch.tensor([[5, 6, 7], [1, 2, 3]])])
    assert lengths == [1, 3]
    assert right.tolist() == [[8, runner.pad_id, runner.pad_id], [5, 6, 7], [1, 2, 3]]
