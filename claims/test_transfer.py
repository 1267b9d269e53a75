"""The finding's headline claims: what KV replacement and persistent patches transfer."""

import pytest

from harness.arms import KV_ONLY, L27_V, RELAY
from harness.claims import SEED_FILE, Claim, Source

KV_ONLY_FAILS = Claim(
    id="kv-only-fails",
    statement="Replacing the baseline's KV cache with the champion's, alone, does not transfer "
              "the champion's behaviour (about 0%).",
    source=Source(SEED_FILE, "KV cache alone → 0% transfer"),
    arm=KV_ONLY, threshold=0.2, direction="below",
)
L27_V_FULL_KV = Claim(
    id="l27-v-full-kv",
    statement="Full KV replacement plus persistent V_PROJ patching at layer 27 during generation "
              "transfers the behaviour (100%).",
    source=Source(SEED_FILE, "Full KV cache (all layers) + Persistent V_PROJ at L27 ✅"),
    arm=L27_V, threshold=0.8, direction="above", must_differ_from=KV_ONLY,
)
RELAY_CHAIN = Claim(
    id="relay-chain",
    statement="Full KV replacement plus persistent RESIDUAL patching at layer 18 and V_PROJ at "
              "layer 27 transfers the behaviour (100%).",
    source=Source(SEED_FILE, "Full KV cache + RESIDUAL at L18 + V_PROJ at L27 ✅"),
    arm=RELAY, threshold=0.8, direction="above", must_differ_from=KV_ONLY,
)
KV_NECESSARY_NOT_SUFFICIENT = Claim(
    id="kv-necessary-not-sufficient",
    statement="The layer-27 patch adds transfer that KV replacement alone does not give.",
    source=Source(SEED_FILE, "KV cache is necessary but not sufficient. You need BOTH."),
    kind="contrast", arm=L27_V, versus=KV_ONLY, threshold=0.0, direction="above",
    must_differ_from=KV_ONLY,
)

PROTOCOLS = ["original", "corrected"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kv_only_fails(verify, protocol):
    verify(KV_ONLY_FAILS, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_l27_v_full_kv(verify, protocol):
    verify(L27_V_FULL_KV, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_relay_chain(verify, protocol):
    verify(RELAY_CHAIN, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kv_necessary_not_sufficient(verify, protocol):
    verify(KV_NECESSARY_NOT_SUFFICIENT, protocol)
