"""The records of an experiment, apart from the engine that runs them: no torch here.

A :class:`Protocol` holds every choice that is not the intervention; an
:class:`Intervention` says what is spliced and patched; an :class:`ArmResult` is
what one arm of one pair generated, with what its patches did (:class:`PatchCount`).
The two built-in protocols are :data:`ORIGINAL` and :data:`CORRECTED` (see
:mod:`harness.generate` for what each does step by step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessLookupError, HarnessValueError, did_you_mean
from harness.sites import SOURCE_DEPTH, map_layer, parse_site

__all__ = ["Protocol", "ORIGINAL", "CORRECTED", "PROTOCOLS", "get_protocol", "Intervention",
           "ArmResult", "PatchCount"]


@dataclass(frozen=True)
class PatchCount:
    """What one patch did in one phase: calls seen and values actually changed."""

    site: str
    layer: int
    phase: str
    calls: int
    changed: int


@dataclass(frozen=True)
class Protocol:
    """Every choice that is not the intervention."""

    name: str
    align: str
    refeed_last: bool
    patch_mode: str
    patch_phases: tuple[str, ...]
    temperature: float = 0.8
    top_k: int | None = None
    reference_top_k: int | None = None
    gen_tokens: int = 32
    window: int = 16
    decode_source: str = "last"
    greedy: bool = False
    stop_at_eos: bool = True
    #: A metric the protocol's verdicts are judged on whatever the finding says; None (the
    #: built-in protocols): the finding's choice for this protocol (:class:`harness.finding.Finding`).
    metric: str | None = None
    #: The alignment used instead of ``align`` on a model with absolute positions (GPT-2's
    #: learned position embeddings), whose keys carry no rotation to move; None: ``align``.
    align_absolute_positions: str | None = None

    def with_(self, **changes: Any) -> Protocol:
        return dataclasses.replace(self, **changes)


ORIGINAL = Protocol(
    "original", align="right", refeed_last=True, patch_mode="original",
    patch_phases=("decode",), reference_top_k=50,
)
CORRECTED = Protocol(
    "corrected", align="right-rerotated", refeed_last=False, patch_mode="corrected",
    patch_phases=("prefill", "decode"), align_absolute_positions="left",
)
PROTOCOLS = {p.name: p for p in (ORIGINAL, CORRECTED)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise HarnessLookupError(
            f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}."
            + did_you_mean(name, PROTOCOLS)
        )
    return PROTOCOLS[name]


@dataclass(frozen=True)
class Intervention:
    """A KV splice (layers as written for a 32-layer model) and/or persistent patches.

    ``kv_layers`` is ``"all"``, layers as written in the finding (normalised to a
    sorted tuple), or None. ``source`` is ``"champion"`` or ``"random"``
    (norm-matched random activations in place of the champion's, a control).
    ``steer``: sites where ``coefficient`` x the pair's steering vector (mean champion
    minus mean baseline activation at the site) is added at every position of the
    protocol's patch phases; ``ablate``: sites replaced there by zeros (``ablation="zero"``)
    or by the baseline prompt's mean activation (``"mean"``). See :mod:`harness.edits`.
    The name identifies the intervention in reports: two different interventions
    of one run must not share it.
    """

    name: str
    kv_layers: str | tuple[int, ...] | None = None
    patches: tuple[str, ...] = ()
    source: str = "champion"
    steer: tuple[str, ...] = ()
    coefficient: float = 1.0
    ablate: tuple[str, ...] = ()
    ablation: str = "zero"

    def __post_init__(self) -> None:
        for field_name in ("patches", "steer", "ablate"):
            value = getattr(self, field_name)
            if isinstance(value, str):  # ("v_proj@27") is a string, not a tuple of one site
                raise HarnessValueError(f"intervention {self.name}: {field_name}={value!r}; expected a tuple of "
                                        f"sites, e.g. ({value!r},)")
            for text in value:
                site = parse_site(text)
                if field_name != "patches":  # a layer outside the finding's 0..31, refused now
                    map_layer(site.layer, SOURCE_DEPTH)
        if isinstance(self.coefficient, bool) or not isinstance(self.coefficient, (int, float)) \
                or self.coefficient != self.coefficient or abs(self.coefficient) == float("inf"):
            raise HarnessValueError(f"intervention {self.name}: coefficient {self.coefficient!r}; expected a "
                                    "finite number")
        if self.ablation not in ("zero", "mean"):
            raise HarnessValueError(f"intervention {self.name}: ablation {self.ablation!r}; expected 'zero' or "
                                    "'mean'")
        if self.source not in ("champion", "random"):
            raise HarnessValueError(f"intervention source {self.source!r}; expected 'champion' or 'random'")
        if isinstance(self.kv_layers, str) and self.kv_layers != "all":
            raise HarnessValueError(f"kv_layers {self.kv_layers!r}; expected 'all', a tuple of layers or None")
        if self.kv_layers is not None and not isinstance(self.kv_layers, str):
            for layer in self.kv_layers:
                map_layer(layer, SOURCE_DEPTH)  # refuses a layer outside the finding's 0..31 now
            object.__setattr__(self, "kv_layers", tuple(sorted(set(int(x) for x in self.kv_layers))))

    @property
    def edits(self) -> tuple[tuple[str, str], ...]:
        """(kind, site) of every steering and ablation edit: ``steer``, ``zero`` or ``mean``."""
        return (*(("steer", s) for s in self.steer), *((self.ablation, s) for s in self.ablate))

    @property
    def does_nothing(self) -> bool:
        """No splice, no patch, no edit."""
        return not self.kv_layers and not self.patches and not self.edits

    def mapped_kv_layers(self, n_layers: int) -> tuple[int, ...]:
        """The spliced layers of an ``n_layers`` model, sorted (empty when nothing is spliced)."""
        if self.kv_layers is None:
            return ()
        if self.kv_layers == "all":
            return tuple(range(n_layers))
        return tuple(sorted({map_layer(layer, n_layers) for layer in self.kv_layers}))


@dataclass(frozen=True)
class ArmResult:
    """One arm of one pair under one protocol: generated tokens per seed, patch counts."""

    pair_id: str
    arm: str
    protocol: str
    seeds: tuple[int, ...]
    tokens: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    patch_counts: tuple[PatchCount, ...] = ()
    kv_layers: tuple[int, ...] = ()
    declared_phases: tuple[str, ...] = field(default=())
    #: Another arm whose computation this is, run once for both (e.g. "baseline").
    same_as: str = ""
    #: Key and value elements the KV splice changed in this pair's cache (-1: no splice).
    kv_changed: int = -1
