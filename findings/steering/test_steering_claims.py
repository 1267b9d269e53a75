"""The steering finding's claims: what adding the champion-minus-baseline vector transfers,
judged on the register classifier (``register_probability``), not on marker words."""

import pytest
from steering import SOURCE_FILE, steer

from harness.claims import Claim, Contrast, Efficiency, Source

STEER_18, HALF_18, REVERSED_18, STEER_5 = (steer("resid_pre@18", 1.0), steer("resid_pre@18", 0.5),
                                           steer("resid_pre@18", -1.0), steer("resid_pre@5", 1.0))

CLAIMS = [
    Claim(id="steering-l18-transfers",
          statement="Adding the steering vector (mean champion minus mean baseline activation) at the input "
                    "of layer 18 with coefficient 1 transfers most of the champion's register (efficiency "
                    "above 0.5 on the register classifier).",
          source=Source(SOURCE_FILE, "the vector at layer 18 carries the register"),
          measure=Efficiency(STEER_18), threshold=0.5, direction="above"),
    Claim(id="steering-dose-response",
          statement="Coefficient 1 transfers more than coefficient 0.5 at the same site.",
          source=Source(SOURCE_FILE, "the effect grows with the coefficient"),
          measure=Contrast(STEER_18, versus=HALF_18), threshold=0.0, direction="above",
          must_differ_from=HALF_18),
    Claim(id="reversed-steering-transfers",
          statement="Subtracting the vector (coefficient -1) transfers the register too: only the vector's "
                    "size matters, not its sign (the claim a sign check refutes).",
          source=Source(SOURCE_FILE, "any large push at layer 18 changes the register"),
          measure=Efficiency(REVERSED_18), threshold=0.5, direction="above"),
    Claim(id="early-steering-transfers-half",
          statement="The same vector added at layer 5 transfers at least half of the register.",
          source=Source(SOURCE_FILE, "early layers already hold the register"),
          measure=Efficiency(STEER_5), threshold=0.5, direction="above"),
]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_steering_claim(verify, claim):
    verify(claim, "corrected")
