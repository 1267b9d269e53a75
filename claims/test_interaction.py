"""The KV x V_PROJ interaction, as a 2x2 factorial: does the layer-27 V patch add more on top
of the full KV splice than it adds on its own? Per pair, (both - KV alone) - (V alone - neither)
on efficiencies; 0 when the two factors simply add up."""

import pytest
from finding import KV_ONLY, L27_V, NOTHING, SEED_FILE, V_WITHOUT_KV

from harness.claims import Claim, Interaction, Source

KV_V_INTERACTION = Claim(
    id="kv-v-proj-interaction",
    statement="The layer-27 V_PROJ patch and the full KV splice interact: the patch adds more transfer on "
              "top of the KV splice than it adds without it ((both - KV) - (V - neither) above 0).",
    source=Source(SEED_FILE, "KV cache is necessary but not sufficient. You need BOTH."),
    measure=Interaction(both=L27_V, first=KV_ONLY, second=V_WITHOUT_KV, neither=NOTHING),
    threshold=0.0, direction="above",
)


@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_kv_v_proj_interaction(verify, protocol):
    verify(KV_V_INTERACTION, protocol)
