"""The geometric claim: the champion prompt contracts V-space at the late layer."""

import pytest

from harness.claims import SEED_FILE, Claim, Source

RV_CONTRACTION = Claim(
    id="rv-contraction",
    statement="R_V = PR(V at layer 27) / PR(V at layer 5) is lower for the champion prompt than "
              "for the baseline prompt.",
    source=Source(SEED_FILE, "L27 V_PROJ: The critical layer where contraction occurs"),
    kind="rv", rv_layers=(27, 5), threshold=0.0, direction="below",
)


@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_rv_contraction(verify, protocol):
    verify(RV_CONTRACTION, protocol)
