"""Steering and ablation edits, against independent computations on the toy and on tiny GPT-2,
GPT-NeoX and Phi-3 models (fused QKV).

The oracles change the model's weights instead of hooking it: adding c x v at every position
of an output projection's output is that projection with its bias raised by c x v; zero
ablation is the projection with weight and bias zeroed; mean ablation is the projection with
weight zeroed and bias set to the mean. A second runner on the changed copy samples the
*baseline* arm with the same seeds: its tokens must equal the edited arm's, token for token,
on pairs of different lengths batched together (left padding), and its teacher-forced score
must equal the edited arm's within float32 rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from tiny import HostReads, changed_by_group, tiny_gpt2, tiny_mistral, tiny_neox, tiny_phi3, tiny_subject

from harness.edits import EditSpec, prompt_mean, steering_vector
from harness.errors import HarnessValueError
from harness.generate import CORRECTED, ORIGINAL, Intervention, Runner
from harness.model import load_subject
from harness.prompts import default_pairs, spread

SUBJECTS = {
    "toy": lambda: load_subject(),
    "gpt2": lambda: tiny_subject(tiny_gpt2),
    "neox": lambda: tiny_subject(tiny_neox),
    "phi3": lambda: tiny_subject(tiny_phi3),
}
#: Three pairs of different token lengths (equal, champion longer, baseline longer): batched
#: together, every row carries its own left padding.
PAIRS = spread(default_pairs(), 3)
SEEDS = (0, 1, 2)
PROTOCOL = CORRECTED.with_(gen_tokens=8)
#: float32 scores through two different computations (hook vs. changed weights).
ATOL = 1e-4


@functools.lru_cache(maxsize=None)
def runner(name: str) -> Runner:
    return Runner(SUBJECTS[name]())


def _seeds() -> dict[str, tuple[int, ...]]:
    return {p.id: SEEDS for p in PAIRS}


def _tokens(r: Runner, arm, protocol=PROTOCOL) -> list[tuple]:
    return [res.tokens for res in r.run_many(PAIRS, arm, protocol, _seeds())]


def _changed_copy(r: Runner, site: str, change) -> Runner:
    """A runner on a deep copy of the subject whose module at ``site`` was changed by ``change``.

    The score is of the *clean* champion's greedy continuation: the copy is given the
    original's (its own champion is edited too, and would continue differently)."""
    model = copy.deepcopy(r.model)
    subject = dataclasses.replace(r.subject, model=model, layout=type(r.layout)(model))
    change(subject.layout.resolve(site).module)
    oracle = Runner(subject)
    r.champion_continuations(PAIRS, PROTOCOL)
    oracle._greedy.update(r._greedy)
    return oracle


def _add_bias(module: torch.nn.Module, vector: torch.Tensor) -> None:
    if getattr(module, "bias", None) is None:  # Llama-family projections have none: give it one
        module.bias = torch.nn.Parameter(vector.clone())
    else:
        module.bias.data += vector


def _set_weights(module: torch.nn.Module, bias: torch.Tensor) -> None:
    module.weight.data.zero_()
    if getattr(module, "bias", None) is None:
        module.bias = torch.nn.Parameter(bias.clone())
    else:
        module.bias.data.copy_(bias)


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_steering_with_coefficient_zero_is_the_baseline_and_changes_nothing(name):
    r = runner(name)
    arm = Intervention("steer x0", steer=("attn_out@27",), coefficient=0.0)
    results = r.run_many(PAIRS, arm, PROTOCOL, _seeds())
    assert [res.tokens for res in results] == _tokens(r, "baseline")
    for res in results:
        counts = {c.phase: c for c in res.patch_counts}
        assert counts["prefill"].calls > 0 and counts["decode"].calls > 0
        assert counts["prefill"].changed == 0 and counts["decode"].changed == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUBJECTS))
def test_steering_is_a_bias_on_the_output_projection(name):
    """Adding c x v to attn_out at every position equals raising the projection's bias by c x v
    (one vector per pair, so one pair per oracle run)."""
    r = runner(name)
    coefficient = 3.0
    arm = Intervention("steer attn_out@27 x3", steer=("attn_out@27",), coefficient=coefficient)
    for pair in PAIRS:
        vector = steering_vector(r, pair, "attn_out@27")
        oracle = _changed_copy(r, "attn_out@27", lambda m: _add_bias(m, coefficient * vector))
        steered = r.run(pair, arm, PROTOCOL, SEEDS)
        assert steered.tokens == oracle.run(pair, "baseline", PROTOCOL, SEEDS).tokens, pair.id
        assert r.score(pair, arm, PROTOCOL) == pytest.approx(oracle.score(pair, "baseline", PROTOCOL), abs=ATOL)
        cont = r.champion_continuation(pair, PROTOCOL)  # the one-pair scoring path too
        assert r.continuation_logprob(pair, arm, PROTOCOL, cont) == pytest.approx(
            oracle.continuation_logprob(pair, "baseline", PROTOCOL, cont), abs=ATOL)
        counts = {c.phase: c for c in steered.patch_counts}
        assert counts["prefill"].changed > 0 and counts["decode"].changed > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUBJECTS))
@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_ablation_is_the_projection_with_its_weight_zeroed(name, ablation):
    r = runner(name)
    arm = Intervention(f"{ablation}-ablate attn_out@27", ablate=("attn_out@27",), ablation=ablation)
    skip_bos = r.tokenizer.bos_token_id is not None
    for pair in PAIRS[:2]:
        mean = prompt_mean(r.activation(pair.baseline, r.layout.resolve("attn_out@27").site), skip_bos)
        bias = mean if ablation == "mean" else torch.zeros_like(mean)
        oracle = _changed_copy(r, "attn_out@27", lambda m: _set_weights(m, bias))
        assert r.run(pair, arm, PROTOCOL, SEEDS).tokens == oracle.run(pair, "baseline", PROTOCOL, SEEDS).tokens
        assert r.score(pair, arm, PROTOCOL) == pytest.approx(oracle.score(pair, "baseline", PROTOCOL), abs=ATOL)


@pytest.mark.slow
def test_steering_v_proj_on_the_toy_is_a_bias_on_v():
    r = runner("toy")
    arm = Intervention("steer v_proj@27 x4", steer=("v_proj@27",), coefficient=4.0)
    pair = PAIRS[1]
    vector = steering_vector(r, pair, "v_proj@27")
    oracle = _changed_copy(r, "v_proj@27", lambda m: _add_bias(m, 4.0 * vector))
    assert r.run(pair, arm, PROTOCOL, SEEDS).tokens == oracle.run(pair, "baseline", PROTOCOL, SEEDS).tokens


@pytest.mark.parametrize("name", ["gpt2", "neox", "phi3"])
def test_fused_v_proj_edits_touch_only_v_and_count_both_phases(name):
    """On a fused QKV projection the edit sees V's slice only: zero-ablating V at every position
    leaves Q and K (recorded through the same fused output) as they were."""
    r = runner(name)
    arm = Intervention("zero v", ablate=("v_proj@27",))
    res = r.run(PAIRS[0], arm, PROTOCOL, SEEDS)
    counts = {c.phase: c for c in res.patch_counts}
    assert counts["prefill"].changed > 0 and counts["decode"].changed > 0
    zero = Intervention("steer v x0", steer=("v_proj@27",), coefficient=0.0)
    assert r.run(PAIRS[0], zero, PROTOCOL, SEEDS).tokens == r.run(PAIRS[0], "baseline", PROTOCOL, SEEDS).tokens


def test_under_the_original_protocol_edits_act_in_decoding_only():
    r = runner("toy")
    res = r.run(PAIRS[0], Intervention("steer x2", steer=("attn_out@27",), coefficient=2.0),
                ORIGINAL.with_(gen_tokens=6), SEEDS)
    counts = {c.phase: c for c in res.patch_counts}
    assert counts["prefill"].calls == 0 and counts["prefill"].changed == 0
    assert counts["decode"].changed > 0 and res.declared_phases == ("decode",)


def test_the_steering_vector_is_the_mean_difference_of_the_prompts_activations():
    r = runner("toy")
    pair = PAIRS[0]
    site = r.layout.resolve("mlp_out@20").site
    c, b = r.activation(pair.champion, site), r.activation(pair.baseline, site)
    expected = c[1:].double().mean(0) - b[1:].double().mean(0)  # BOS left out
    assert torch.allclose(steering_vector(r, pair, "mlp_out@20").double(), expected, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(steer="v_proj@27"), "expected a tuple of sites"),
    (dict(steer=("v_proj@27",), coefficient=float("nan")), "coefficient nan"),
    (dict(ablate=("v_proj@27",), ablation="random"), "ablation 'random'"),
    (dict(ablate=("v_proj@99",)), "99"),
])
def test_bad_edit_fields_are_refused_in_one_line(bad, match):
    with pytest.raises(HarnessValueError, match=match):
        Intervention("x", **bad)


def test_an_edit_of_a_kv_site_is_refused():
    with pytest.raises(HarnessValueError, match="cannot be edited"):
        EditSpec("kv@3", "steer")


def test_an_edit_reads_nothing_back_from_a_start_on_the_device():
    """Under a static cache the tracker's start is a tensor on the device: the edit and its
    counts are computed from it without reading a value back to the host."""
    from types import SimpleNamespace

    from harness.edits import EditGroup, EditHandle
    from harness.sites import layout_for

    model, _ = tiny_mistral()
    gen = torch.Generator().manual_seed(1)
    d = model.config.hidden_size
    groups = [EditGroup(slice(0, 2), 1, 4, torch.randn(d, generator=gen)),
              EditGroup(slice(2, 3), 0, 7, torch.randn(d, generator=gen))]  # the groups' phases differ
    spec = EditSpec("resid_post@1", "steer", coefficient=2.0)
    x = torch.randn(3, 2, d, generator=gen)
    on_device, on_host = (EditHandle(layout_for(model), spec, groups, SimpleNamespace(start=0)) for _ in range(2))
    on_device._edit(x)  # the first call lays the groups out on the device (host work, once per batch shape)
    changed = changed_by_group(x, on_host._edit(x), 0, groups)
    for start in range(2, 8, 2):
        on_device.tracker.start, on_host.tracker.start = torch.tensor(start), start
        with HostReads() as reads:
            out = on_device._edit(x)
        assert reads.count == 0
        torch.testing.assert_close(out, on_host._edit(x), rtol=0, atol=0)
        for total, by_hand in zip(changed, changed_by_group(x, out, start, groups)):
            for phase, n in by_hand.items():
                total[phase] += n
    assert [on_device.group_counts(i) for i in range(2)] == [on_host.group_counts(i) for i in range(2)]
    # by hand, over starts 0, 2, 4, 6 of 2 positions: group 0 (pad 1, prompt 4) reaches the
    # prefill 3 times and decoding 2 times; group 1 (pad 0, prompt 7) 4 and 1 times
    for i, expected in enumerate([(3, 2), (4, 1)]):
        prefill, decode = on_device.group_counts(i)
        assert (prefill.calls, decode.calls) == expected
        assert (prefill.changed, decode.changed) == (changed[i]["prefill"], changed[i]["decode"])
        assert prefill.changed > 0 and decode.changed > 0
