"""The finding under test: its source file and its named arms (KV splices, persistent patches).

Layers are written as in the finding (for a 32-layer model); the runner maps
them to the subject's depth. Claim modules import from here (``from finding import
...``): pytest puts this folder on the import path when it collects them.
"""

from __future__ import annotations

from harness.records import Intervention

#: The findings file the claims quote, as the shared design names it.
SEED_FILE = "seeds/000_83d9e96518e33c6a.txt"

__all__ = [
    "SEED_FILE",
    "KV_ONLY", "L27_V", "RELAY", "SINGLE_LAYER_KV", "V_WITHOUT_KV", "RESID_WITHOUT_KV",
    "WRONG_LAYER_V", "RANDOM_SOURCE_V", "NOTHING", "kv_prefix", "kv_suffix",
]

KV_ONLY = Intervention("kv-only", kv_layers="all")
L27_V = Intervention("kv+v_proj@27", kv_layers="all", patches=("v_proj@27",))
RELAY = Intervention("kv+resid_pre@18+v_proj@27", kv_layers="all", patches=("resid_pre@18", "v_proj@27"))
SINGLE_LAYER_KV = Intervention("kv@27", kv_layers=(27,))
V_WITHOUT_KV = Intervention("v_proj@27", patches=("v_proj@27",))
RESID_WITHOUT_KV = Intervention("resid_pre@18", patches=("resid_pre@18",))
#: Controls: the same patch at the wrong layer, and norm-matched random activations.
WRONG_LAYER_V = Intervention("kv+v_proj@5", kv_layers="all", patches=("v_proj@5",))
RANDOM_SOURCE_V = Intervention("kv+random v_proj@27", kv_layers="all", patches=("v_proj@27",), source="random")
#: No splice, no patch: the intervention arms' decoding loop by itself.
NOTHING = Intervention("no intervention")


def kv_prefix(k: int) -> Intervention:
    """KV from layers 0..k (as written for 32 layers)."""
    return Intervention(f"kv@0..{k}", kv_layers=tuple(range(0, k + 1)))


def kv_suffix(k: int) -> Intervention:
    """KV from layers k..31 (as written for 32 layers)."""
    return Intervention(f"kv@{k}..31", kv_layers=tuple(range(k, 32)))
