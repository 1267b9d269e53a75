"""The finding's headline claims: what KV replacement and persistent patches transfer."""

import pytest
from finding import KV_ONLY, L27_V, RELAY, SEED_FILE

from harness.claims import Claim, Contrast, Efficiency, Source

KV_ONLY_FAILS = Claim(
    id="kv-only-fails",
    statement="Replacing the baseline's KV cache with the champion's, alone, transfers about 0% of the "
              "champion's behaviour: the efficiency lies within [-0.2, 0.2] (an equivalence claim).",
    source=Source(SEED_FILE, "KV cache alone → 0% transfer"),
    measure=Efficiency(KV_ONLY), threshold=-0.2, threshold_high=0.2, direction="within",
)
DEC7_KV_ABOUT_80 = Claim(
    id="dec7-kv-about-80",
    statement="The earlier hypothesis: full KV replacement alone transfers about 80% of the behaviour "
              "(efficiency within [0.6, 1.0]).",
    source=Source(SEED_FILE, "Dec 7 claimed: KV cache patching → ~80% behavior transfer"),
    measure=Efficiency(KV_ONLY), threshold=0.6, threshold_high=1.0, direction="within",
)
# "100%" is a claim of success, not of an exact value: an arm that overshoots the champion
# (efficiency above 1) transfers it too. So these stay one-sided, at least 0.8.
L27_V_FULL_KV = Claim(
    id="l27-v-full-kv",
    statement="Full KV replacement plus persistent V_PROJ patching at layer 27 during generation "
              "transfers the behaviour (the finding: 100%; claimed here as an efficiency above 0.8).",
    source=Source(SEED_FILE, "Full KV cache (all layers) + Persistent V_PROJ at L27 ✅"),
    measure=Efficiency(L27_V), threshold=0.8, direction="above", must_differ_from=KV_ONLY,
)
RELAY_CHAIN = Claim(
    id="relay-chain",
    statement="Full KV replacement plus persistent RESIDUAL patching at layer 18 and V_PROJ at "
              "layer 27 transfers the behaviour (the finding: 100%; claimed here as above 0.8).",
    source=Source(SEED_FILE, "Full KV cache + RESIDUAL at L18 + V_PROJ at L27 ✅"),
    measure=Efficiency(RELAY), threshold=0.8, direction="above", must_differ_from=KV_ONLY,
)
KV_NECESSARY_NOT_SUFFICIENT = Claim(
    id="kv-necessary-not-sufficient",
    statement="The layer-27 patch adds transfer that KV replacement alone does not give.",
    source=Source(SEED_FILE, "KV cache is necessary but not sufficient. You need BOTH."),
    measure=Contrast(L27_V, versus=KV_ONLY), threshold=0.0, direction="above",
    must_differ_from=KV_ONLY,
)
CLAIMS = [KV_ONLY_FAILS, DEC7_KV_ABOUT_80, L27_V_FULL_KV, RELAY_CHAIN, KV_NECESSARY_NOT_SUFFICIENT]


@pytest.mark.parametrize("protocol", ["original", "corrected"])
@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_transfer(verify, claim, protocol):
    verify(claim, protocol)
