"""Controls a careful reader asks for: the same patch at the wrong layer, a random source,
and the decoding loop with no intervention at all.

If layer 27 is special, the layer-5 patch should add less; if the champion's activations
matter, norm-matched random activations at layer 27 should add less; and if the interventions
cause the transfer, the protocol's own loop (which under `original` feeds the baseline's last
token a second time) must transfer nothing by itself.
"""

import pytest
from finding import L27_V, NOTHING, RANDOM_SOURCE_V, SEED_FILE, WRONG_LAYER_V

from harness.claims import Claim, Contrast, Efficiency, Source

CONTROLS = [
    Claim(id="l27-beats-wrong-layer",
          statement="Patching V_PROJ at layer 27 transfers more than the same patch at layer 5.",
          source=Source(SEED_FILE, "L27 V_PROJ: The critical layer where contraction occurs"),
          measure=Contrast(L27_V, versus=WRONG_LAYER_V), threshold=0.0, direction="above",
          must_differ_from=WRONG_LAYER_V),
    Claim(id="l27-beats-random-source",
          statement="The champion's layer-27 V activations transfer more than norm-matched random "
                    "activations at the same site.",
          source=Source(SEED_FILE, "Persistent geometric signature (V_PROJ at L27)"),
          measure=Contrast(L27_V, versus=RANDOM_SOURCE_V), threshold=0.0, direction="above",
          must_differ_from=RANDOM_SOURCE_V),
    Claim(id="decoding-loop-alone-transfers-nothing",
          statement="The intervention arms' decoding loop with no splice and no patch transfers "
                    "nothing (the comparison every transfer claim silently relies on).",
          source=Source(SEED_FILE, "Generate token-by-token with patched KV + persistent patch"),
          measure=Efficiency(NOTHING), threshold=0.2, direction="below"),
]


# Under `corrected` the loop with no intervention is the baseline arm's own computation: that
# cell would compare the baseline with itself and could not fail, so it is not a claim (the
# machinery test tests/test_generate.py checks the identity; the evaluator refuses such a cell).
CELLS = [pytest.param(claim, protocol, id=f"{claim.id}-{protocol}")
         for protocol in ("original", "corrected") for claim in CONTROLS
         if not (claim.id == "decoding-loop-alone-transfers-nothing" and protocol == "corrected")]


@pytest.mark.parametrize(("claim", "protocol"), CELLS)
def test_control(verify, claim, protocol):
    verify(claim, protocol)
