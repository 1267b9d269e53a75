"""The geometric claims: contraction of V-space at the late layer, its relay over layers,
and whether the interventions that transfer the behaviour also carry the geometry.

Prompt-pass measures (R_V, PR per layer) do not depend on any protocol: they run once.
"""

import pytest
from finding import KV_ONLY, L27_V, RELAY, SEED_FILE

from harness.claims import Claim, GeometryShift, PrDifference, RvDifference, Source

RV_CONTRACTION = Claim(
    id="rv-contraction",
    statement="R_V = PR(V at layer 27) / PR(V at layer 5) is lower for the champion prompt than "
              "for the baseline prompt.",
    source=Source(SEED_FILE, "L27 V_PROJ: The critical layer where contraction occurs"),
    measure=RvDifference(late=27, early=5), threshold=0.0, direction="below",
)
INHALE = Claim(
    id="relay-inhale-exhale@18",
    statement="Inhale: at layer 18 the champion prompt's V-space expands: its PR of V is higher than "
              "the baseline's.",
    source=Source(SEED_FILE, "L18: Expansion phase (inhale)"),
    measure=PrDifference(layer=18), threshold=0.0, direction="above",
)
EXHALE = Claim(
    id="relay-inhale-exhale@27",
    statement="Exhale: at layer 27 the champion prompt's V-space contracts: its PR of V is lower than "
              "the baseline's.",
    source=Source(SEED_FILE, "L27: Contraction phase (exhale)"),
    measure=PrDifference(layer=27), threshold=0.0, direction="below",
)


def geometry_follows(arm):
    return Claim(
        id=f"geometry-follows-behaviour[{arm.name}]",
        statement=f"The sequences {arm.name} generates carry the champion's geometry: R_V (V@27 over V@5, "
                  "last 16 positions of prompt + continuation, read by a clean pass with no intervention) "
                  "moves from the baseline arm's toward the champion arm's (shift above 0, where 1 is the "
                  "champion's own).",
        source=Source(SEED_FILE, "R_V contraction (geometry) IS causally linked to recursive behavior"),
        measure=GeometryShift(arm, late=27, early=5), threshold=0.0, direction="above",
    )


@pytest.mark.parametrize("claim", [RV_CONTRACTION, INHALE, EXHALE], ids=lambda c: c.id)
def test_prompt_geometry(verify, claim):
    verify(claim)


@pytest.mark.parametrize("protocol", ["original", "corrected"])
@pytest.mark.parametrize("arm", [KV_ONLY, L27_V, RELAY], ids=lambda a: a.name)
def test_geometry_follows_behaviour(verify, arm, protocol):
    verify(geometry_follows(arm), protocol)
