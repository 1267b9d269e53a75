"""Library-version differences: what the harness refuses on a version that cannot do it."""

from __future__ import annotations

import pytest

import harness.compat as compat
from harness.errors import HarnessValueError


def test_a_static_cache_on_transformers_4_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(compat, "transformers_major", lambda: 4)
    with pytest.raises(HarnessValueError, match="static-cache decoding needs transformers 5") as exc:
        compat.static_cache(2, 8)
    assert "\n" not in str(exc.value)


@pytest.mark.skipif(compat.transformers_major() < 5, reason="static caches are a transformers 5 feature here")
def test_a_static_cache_holds_the_given_layers_at_the_front_of_its_slots():
    import torch

    keys = [torch.randn(2, 3, 4, 5) for _ in range(2)]
    values = [torch.randn(2, 3, 4, 5) for _ in range(2)]
    cache = compat.static_cache(2, 7, keys, values)
    assert int(cache.get_seq_length()) == 4
    for (k, v), want_k, want_v in zip(compat.cache_layers(cache), keys, values):
        assert k.shape == (2, 3, 7, 5)
        assert torch.equal(k[:, :, :4], want_k) and torch.equal(v[:, :, :4], want_v)
        assert not k[:, :, 4:].any()  # the rest is free for decoding
