"""PR profiles and R_V of whole sequences, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.generate import Runner
from harness.geometry import Geometry
from harness.metrics import participation_ratio, r_v
from harness.model import load_subject
from harness.patches import record
from harness.prompts import default_pairs
from harness.sites import Site


@pytest.fixture(scope="module")
def runner():
    return Runner(load_subject())


def test_pr_profile_is_the_pr_of_each_layers_v(runner):
    text = default_pairs()[3].champion
    profile = Geometry(runner).pr_profile(text)
    assert profile.shape == (32,)
    for layer in (0, 18, 27):
        v = record(runner.model, runner.layout, runner.ids(text), [Site("v_proj", layer)])[Site("v_proj", layer)]
        assert math.isclose(profile[layer], participation_ratio(v[-16:]), rel_tol=1e-9)


def test_sequence_rv_batched_equals_each_sequence_alone(runner):
    pairs = default_pairs()[:5]
    seqs = [runner.ids(p.baseline)[0].tolist() + [5, 6, 7][: i % 3] for i, p in enumerate(pairs)]
    geo = Geometry(runner, batch=8)
    batched = geo.sequence_rv(seqs, 27, 5)
    for seq, value in zip(seqs, batched):
        ids = runner.ids(pairs[0].baseline).new_tensor([seq])
        acts = record(runner.model, runner.layout, ids, [Site("v_proj", 27), Site("v_proj", 5)])
        alone = r_v(acts[Site("v_proj", 27)], acts[Site("v_proj", 5)], window=16)
        assert abs(value - alone) < 1e-4 * max(1.0, abs(alone))
    assert len({round(v, 6) for v in batched}) == len(seqs)  # different sequences, different values
    assert not np.isnan(batched).any()


def test_pr_profiles_batched_equal_each_prompt_alone(runner):
    """Prompts of different lengths, right-padded in one pass (and in chunks smaller than
    their number), give each prompt's own profile."""
    texts = [p.champion for p in default_pairs()[:3]] + [p.baseline for p in default_pairs()[:3]]
    assert len({len(runner.ids(t)[0]) for t in texts}) > 1  # the padding varies
    batched = Geometry(runner, batch=4).pr_profiles(texts)
    for text, profile in zip(texts, batched):
        sites = [Site("v_proj", layer) for layer in range(32)]
        acts = record(runner.model, runner.layout, runner.ids(text), sites)
        alone = np.array([participation_ratio(acts[s][-16:]) for s in sites])
        np.testing.assert_allclose(profile, alone, rtol=1e-4)
