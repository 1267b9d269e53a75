"""The finding's "what we tried before" rows: each is claimed to fail."""

import pytest
from finding import RESID_WITHOUT_KV, SEED_FILE, SINGLE_LAYER_KV, V_WITHOUT_KV

from harness.claims import Claim, Efficiency, Source

TRIED_BEFORE = [
    Claim(id="single-layer-kv-fails",
          statement="Replacing the KV cache of a single layer (27) does not transfer the behaviour.",
          source=Source(SEED_FILE, "Single-layer KV cache patching → Failed"),
          measure=Efficiency(SINGLE_LAYER_KV), threshold=0.2, direction="below"),
    Claim(id="v-without-kv-fails",
          statement="Persistent V_PROJ patching at layer 27 without the KV cache does not transfer it.",
          source=Source(SEED_FILE, "V_PROJ patching without full KV → Failed"),
          measure=Efficiency(V_WITHOUT_KV), threshold=0.2, direction="below"),
    Claim(id="resid-without-kv-fails",
          statement="Persistent RESIDUAL patching at layer 18 without the KV cache does not transfer it.",
          source=Source(SEED_FILE, "RESIDUAL patching without full KV → Failed"),
          measure=Efficiency(RESID_WITHOUT_KV), threshold=0.2, direction="below"),
]


@pytest.mark.parametrize("protocol", ["original", "corrected"])
@pytest.mark.parametrize("claim", TRIED_BEFORE, ids=lambda c: c.id)
def test_tried_before_fails(verify, claim, protocol):
    verify(claim, protocol)
