"""The finding's open question: "What's the minimal set of layers needed?"

A greedy search drops blocks of 4 layers (as written for 32) while the KV of the layers left
still transfers 80% of what full KV does, on half of the pairs; the set it ends with is then
judged on the other half only, so the search cannot flatter its own result.
"""

import pytest
from finding import SEED_FILE

from harness.claims import Claim, MinimalKvSet, Source

MINIMAL_KV_SET = Claim(
    id="minimal-kv-set",
    statement="The smallest set of layers (in blocks of 4) whose KV alone keeps 80% of the full-KV "
              "efficiency, found on half of the pairs, keeps it on the other half: efficiency(set) - "
              "0.8 x efficiency(full KV) is above 0 on the held-out pairs.",
    source=Source(SEED_FILE, "Can we reduce from full KV to partial KV? What's the minimal set of layers needed?"),
    measure=MinimalKvSet(share=0.8, block=4), threshold=0.0, direction="above",
)


@pytest.mark.parametrize("protocol", ["original", "corrected"])
def test_minimal_kv_set(verify, protocol):
    verify(MINIMAL_KV_SET, protocol)
