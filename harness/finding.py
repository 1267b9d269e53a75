"""A finding as a folder: what its claims are judged on, where its bank and ledger are.

The engine knows no finding. A finding is a folder holding its claim test modules, a
``ledger.toml``, optionally its own prompt bank, and a ``conftest.py`` that binds::

    FINDING = Finding(name="my-finding", folder=Path(__file__).parent, source_file="...",
                      metrics=(Metric("my_rate", 0.05, "...", my_rate),),
                      protocol_metrics={"original": "my_rate", "corrected": "my_rate"})

The plugin (:mod:`harness.plugin`) gives every claim test the finding of the nearest
folder above it whose ``conftest.py`` binds ``FINDING``; a test under no such folder gets
:data:`GENERIC` (judged on the model-based ``champion_logprob``, the bundled bank, no
ledger of its own). So ``pytest path/to/finding/`` runs any finding, and its verdicts are
looked up in, and written to, that finding's ledger.

Nothing here imports torch or pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessValueError
from harness.metrics import METRICS, Metric, register_metrics
from harness.records import Intervention

__all__ = ["Finding", "GENERIC", "MODEL_METRIC"]

#: The model-based metric: a claim's default when its finding names none for a protocol.
MODEL_METRIC = "champion_logprob"


@dataclass(frozen=True)
class Finding:
    """One finding's declarations (see the module docstring for where it is bound).

    ``metrics``: the finding's own behaviour metrics, beside the generic ones
    (:data:`harness.metrics.METRICS`); registered by name on construction so claims can
    name them. ``protocol_metrics``: protocol name -> the metric its verdicts are judged on
    (a claim may still name another); protocols not listed use ``default_metric``.
    ``bank``: the prompt bank (JSONL), relative to ``folder``; None: the bundled toy bank.
    ``ledger``: the known verdicts, relative to ``folder`` (None: none). ``arms``: the finding's named
    interventions, for the report and for readers (claims import them directly).
    ``family_size``: the number of claim cells the family-wise level covers; None: the
    ini's ``harness_family_size``, else the finding's cells collected in the run.
    """

    name: str
    folder: Path
    source_file: str = ""
    metrics: tuple[Metric, ...] = ()
    protocol_metrics: Mapping[str, str] = field(default_factory=dict)
    default_metric: str = MODEL_METRIC
    bank: str | Path | None = None
    ledger: str | Path | None = "ledger.toml"
    arms: tuple[Intervention, ...] = ()
    family_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or any(c in self.name for c in "/\\\0"):
            raise HarnessValueError(f"finding name {self.name!r}; expected a non-empty name without slashes")
        object.__setattr__(self, "folder", Path(self.folder))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        register_metrics(self.metrics)
        # A read-only copy as a sorted tuple of items keeps the record hashable and frozen.
        object.__setattr__(self, "protocol_metrics", _Items(self.protocol_metrics))
        table = self.metric_table()
        for protocol, metric in (*self.protocol_metrics.items(), ("default", self.default_metric)):
            if metric not in table:
                raise HarnessValueError(
                    f"finding {self.name}: protocol {protocol!r} is judged on {metric!r}, which is neither a "
                    f"generic metric nor one of the finding's; expected one of {', '.join(table)}")
        if self.family_size is not None and (isinstance(self.family_size, bool)
                                             or not isinstance(self.family_size, int) or self.family_size < 1):
            raise HarnessValueError(f"finding {self.name}: family_size {self.family_size!r}; expected a "
                                    "positive integer or None (count the collected cells)")
        for arm in self.arms:
            if not isinstance(arm, Intervention):
                raise HarnessValueError(f"finding {self.name}: arm {arm!r}; expected a harness.records.Intervention")

    def metric_table(self) -> dict[str, Metric]:
        """The metrics computed for this finding's samples: the generic ones and its own."""
        return {**METRICS, **{m.name: m for m in self.metrics}}

    def metric_for(self, protocol: str) -> str:
        """The metric verdicts under ``protocol`` are judged on (when the claim names none)."""
        return dict(self.protocol_metrics.items()).get(protocol, self.default_metric)

    @property
    def bank_path(self) -> Path | None:
        """The prompt bank's file, or None for the bundled toy bank."""
        return None if self.bank is None else self.folder / self.bank

    @property
    def ledger_path(self) -> Path | None:
        """The ledger's file, or None: no known verdicts (every claim must be supported)."""
        return None if self.ledger is None else self.folder / self.ledger

    def check_bank(self) -> None:
        """Refuse a declared bank that is not a file, in one line."""
        path = self.bank_path
        if path is not None and not path.is_file():
            raise HarnessValueError(f"finding {self.name}: bank {str(path)!r} is not a file; put the JSONL "
                                    "bank there or set bank=None for the bundled toy bank")


class _Items(Mapping[str, str]):
    """A frozen, hashable mapping of protocol name to metric name."""

    def __init__(self, items: Mapping[str, str] | Any) -> None:
        pairs = dict(items.items() if isinstance(items, Mapping) else items)
        for k, v in pairs.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise HarnessValueError(f"protocol_metrics entry {k!r}: {v!r}; expected protocol name: metric name")
        self._items = tuple(sorted(pairs.items()))

    def __getitem__(self, key: str) -> str:
        return dict(self._items)[key]

    def __iter__(self) -> Any:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __repr__(self) -> str:
        return repr(dict(self._items))


#: The finding of a claim test under no folder that declares one: judged on the model-based
#: metric, on the bundled bank, with no ledger of its own (``--ledger`` names one).
GENERIC = Finding(name="generic", folder=Path("."), ledger=None)

