"""The geometric claim: the champion prompt contracts V-space at the late layer.

R_V is measured on the prompt pass, which no protocol choice affects: the claim runs once.
"""

from finding import SEED_FILE

from harness.claims import Claim, RvDifference, Source

RV_CONTRACTION = Claim(
    id="rv-contraction",
    statement="R_V = PR(V at layer 27) / PR(V at layer 5) is lower for the champion prompt than "
              "for the baseline prompt.",
    source=Source(SEED_FILE, "L27 V_PROJ: The critical layer where contraction occurs"),
    measure=RvDifference(late=27, early=5), threshold=0.0, direction="below",
)


def test_rv_contraction(verify):
    verify(RV_CONTRACTION)
