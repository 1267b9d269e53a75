"""The finding's own open question: "Can we reduce from full KV to partial KV?"

Each cell claims that KV from a partial block of layers (0..k, or k..31, as written for a
32-layer model) still transfers at least half of the behaviour.
"""

import pytest

from finding import SEED_FILE, kv_prefix, kv_suffix

from harness.claims import Claim, Efficiency, Source

SPLITS = [8, 16, 24]


def sweep_claim(block: str, k: int) -> Claim:
    arm = kv_prefix(k) if block == "prefix" else kv_suffix(k)
    return Claim(
        id=f"partial-kv-{block}-{k}",
        statement=f"KV from layers {arm.name[3:]} alone transfers at least half of the behaviour.",
        source=Source(SEED_FILE, "Can we reduce from full KV to partial KV?"),
        measure=Efficiency(arm), threshold=0.5, direction="above",
    )


@pytest.mark.parametrize("protocol", ["original", "corrected"])
@pytest.mark.parametrize("k", SPLITS)
@pytest.mark.parametrize("block", ["prefix", "suffix"])
def test_partial_kv(verify, block, k, protocol):
    verify(sweep_claim(block, k), protocol)
