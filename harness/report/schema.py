"""The one schema of a run's rows: claim rows and sample rows, typed both ways.

A :class:`ClaimRow` is one claim cell (a claim under a protocol); a
:class:`SampleRow` is one generated sample (protocol, pair, arm, seed) with its
metrics. The CSV columns, the JSON objects and the typed read-back all derive from
these two records, so a field is added in exactly one place. Pure Python: no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessValueError

__all__ = ["ClaimRow", "SampleRow", "CLAIM_COLUMNS", "SAMPLE_KEYS", "BETTING_METHOD", "SEQUENTIAL_METHOD"]

NAN = math.nan

#: ``interval_method`` of a cell judged by the betting test at the run's pairs (harness/bounded.py).
BETTING_METHOD = "betting test of a ratio of bounded means"
#: ``interval_method`` of a cell judged by its sequential form, valid at every number of pairs:
#: the cells ``--until-decided`` grows, and the ones the report explains as such.
SEQUENTIAL_METHOD = "sequential betting test of a ratio of bounded means (anytime-valid)"


@dataclass(frozen=True)
class ClaimRow:
    """What one claim cell measured and decided.

    ``estimate`` is the claim's measure (an efficiency, a contrast of efficiencies,
    or a geometry difference: ``measure`` says which) with its interval at ``level``.
    ``alt_*`` is the same measure on the model-based metric, beside the text metric.
    ``protocol`` is ``"any"`` for a measure that no protocol choice affects.
    """

    claim: str
    protocol: str
    verdict: str
    reason: str
    measure: str = ""
    metric: str = ""
    estimate: float = NAN
    ci_low: float = NAN
    ci_high: float = NAN
    level: float = NAN
    interval_method: str = ""
    degenerate: bool = False
    n_pairs: int = 0
    n_seeds: int = 0
    threshold: float = NAN
    threshold_high: float = NAN
    direction: str = ""
    family_size: int = 0
    mde: float = NAN
    alt_metric: str = ""
    alt_estimate: float = NAN
    alt_low: float = NAN
    alt_high: float = NAN
    alt_verdict: str = ""
    metrics_agree: bool = True
    expected: str = ""
    outcome: str = ""
    model: str = ""
    settings: str = ""
    #: The finding the claim belongs to (its folder's ``FINDING``; "generic" for none).
    finding: str = ""
    kv_layers: str = ""
    sites: str = ""
    calls_prefill: int = 0
    changed_prefill: int = 0
    calls_decode: int = 0
    changed_decode: int = 0
    statement: str = ""
    source_file: str = ""
    source_quote: str = ""
    arms: tuple[str, ...] = ()
    guards: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    #: Data behind a plot, as JSON (e.g. the PR-per-layer profile of a relay claim).
    series: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.claim, self.protocol)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: NaN as null, tuples as lists."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_csv(self) -> dict[str, str]:
        """One CSV record: NaN as an empty cell, tuples as JSON lists."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                out[f.name] = json.dumps(list(value), ensure_ascii=False)
            elif isinstance(value, float) and math.isnan(value):
                out[f.name] = ""
            else:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClaimRow:
        """A row from JSON or CSV values (strings are converted by the field's type).

        Unknown keys are refused: a row written by another schema should not pass
        silently as this one.
        """
        unknown = sorted(set(data) - _CLAIM_TYPES.keys())
        if unknown:
            raise HarnessValueError(f"claim row with unknown fields {', '.join(unknown)}")
        for name in ("claim", "protocol", "verdict", "reason"):
            if name not in data:
                raise HarnessValueError(f"claim row without {name!r}: {dict(data)!r:.120}")
        return cls(**{k: _typed(v, _CLAIM_TYPES[k], k) for k, v in data.items()})


@dataclass(frozen=True)
class SampleRow:
    """One generated sample and its per-sample metrics (None where undefined)."""

    protocol: str
    pair: str
    arm: str
    seed: int
    n_tokens: int
    text: str
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    #: The finding whose metrics these are (each finding computes its own); "" in older runs.
    finding: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return (self.finding, self.protocol, self.pair, self.arm, self.seed)

    def to_json(self) -> dict[str, Any]:
        """Flat: the key fields, then each metric, then the text."""
        head = {"protocol": self.protocol, "pair": self.pair, "arm": self.arm, "seed": self.seed,
                "n_tokens": self.n_tokens, **({"finding": self.finding} if self.finding else {})}
        return {**head, **{k: _to_json(v) for k, v in self.metrics.items()}, "text": self.text}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleRow:
        missing = [k for k in SAMPLE_KEYS if k not in data]
        if missing:
            raise HarnessValueError(f"sample row without {', '.join(missing)}: {json.dumps(dict(data))[:120]}")
        metrics = {k: None if v is None else float(v) for k, v in data.items()
                   if k not in SAMPLE_KEYS and k != "finding"}
        return cls(protocol=str(data["protocol"]), pair=str(data["pair"]), arm=str(data["arm"]),
                   seed=int(data["seed"]), n_tokens=int(data["n_tokens"]), text=str(data["text"]),
                   metrics=metrics, finding=str(data.get("finding", "")))


_CLAIM_TYPES: dict[str, Any] = typing.get_type_hints(ClaimRow)
CLAIM_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ClaimRow))
SAMPLE_KEYS: tuple[str, ...] = ("protocol", "pair", "arm", "seed", "n_tokens", "text")


def _to_json(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    return value


def _typed(value: Any, kind: Any, name: str) -> Any:
    """``value`` (from JSON, or a CSV string) as a field of type ``kind``."""
    try:
        if kind is float:
            return NAN if value is None or value == "" else float(value)
        if kind is int:
            return 0 if value is None or value == "" else int(float(value))
        if kind is bool:
            return value if isinstance(value, bool) else str(value).strip().lower() == "true"
        if kind is str:
            return "" if value is None else str(value)
        if typing.get_origin(kind) is tuple:
            if isinstance(value, str):
                value = json.loads(value) if value.strip() else []
            return tuple(str(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise HarnessValueError(f"claim row field {name!r}: {value!r} is not a {kind}") from exc
    raise HarnessValueError(f"claim row field {name!r} has an unsupported type {kind}")
