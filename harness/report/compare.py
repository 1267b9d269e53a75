"""Two runs of the same claims on different data: do their decisive verdicts contradict?

``python -m harness.report compare RUN_A RUN_B`` reads two run folders (for example the
claims run on two disjoint halves of a prompt bank, or with two seed sets) and sets
their cells side by side by (claim, protocol). A **contradiction** is a cell that one
run calls ``supported`` and the other ``refuted``: under a valid decision rule both
verdicts cannot be right, so a contradiction means at least one false decisive verdict.
A cell decisive in one run and inconclusive (or invalid) in the other is a
**disagreement**, expected where a cell lies near its threshold. The command prints
the counts and every cell that differs, and exits 1 when there is a contradiction.
Pure Python.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.schema import ClaimRow
from harness.report.writer import load_run

__all__ = ["CellPair", "Comparison", "compare_rows", "compare", "comparison_text", "comparison_json"]

DECISIVE = ("supported", "refuted")


@dataclass(frozen=True)
class CellPair:
    """One cell's verdicts in the two runs."""

    claim: str
    protocol: str
    verdict_a: str
    verdict_b: str

    @property
    def contradicts(self) -> bool:
        return {self.verdict_a, self.verdict_b} == set(DECISIVE)


@dataclass(frozen=True)
class Comparison:
    """The cells of two runs side by side."""

    label_a: str
    label_b: str
    counts_a: dict[str, int]
    counts_b: dict[str, int]
    same: int
    contradictions: tuple[CellPair, ...]
    disagreements: tuple[CellPair, ...]
    only_a: tuple[tuple[str, str], ...]
    only_b: tuple[tuple[str, str], ...]

    @property
    def shared(self) -> int:
        return self.same + len(self.contradictions) + len(self.disagreements)

    def to_json(self) -> dict[str, Any]:
        def cells(items: Sequence[CellPair]) -> list[dict[str, str]]:
            return [{"claim": c.claim, "protocol": c.protocol, "a": c.verdict_a, "b": c.verdict_b}
                    for c in items]

        return {"a": self.label_a, "b": self.label_b, "counts_a": self.counts_a, "counts_b": self.counts_b,
                "shared": self.shared, "same": self.same, "contradictions": cells(self.contradictions),
                "disagreements": cells(self.disagreements), "only_a": [list(k) for k in self.only_a],
                "only_b": [list(k) for k in self.only_b]}


def compare_rows(rows_a: Sequence[ClaimRow], rows_b: Sequence[ClaimRow],
                 label_a: str = "A", label_b: str = "B") -> Comparison:
    """Cells of two runs matched by (claim, protocol); the cells one run lacks are listed."""
    by_a = {r.key: r for r in rows_a}
    by_b = {r.key: r for r in rows_b}
    same, contradictions, disagreements = 0, [], []
    for key in sorted(by_a.keys() & by_b.keys()):
        cell = CellPair(key[0], key[1], by_a[key].verdict, by_b[key].verdict)
        if cell.verdict_a == cell.verdict_b:
            same += 1
        elif cell.contradicts:
            contradictions.append(cell)
        else:
            disagreements.append(cell)
    return Comparison(
        label_a=label_a, label_b=label_b,
        counts_a=dict(Counter(r.verdict for r in rows_a)), counts_b=dict(Counter(r.verdict for r in rows_b)),
        same=same, contradictions=tuple(contradictions), disagreements=tuple(disagreements),
        only_a=tuple(sorted(by_a.keys() - by_b.keys())), only_b=tuple(sorted(by_b.keys() - by_a.keys())),
    )


def compare(dir_a: Path, dir_b: Path) -> Comparison:
    """:func:`compare_rows` on two run folders."""
    run_a, run_b = load_run(Path(dir_a)), load_run(Path(dir_b))
    return compare_rows(run_a.claims, run_b.claims, str(dir_a), str(dir_b))


def _counts(counts: dict[str, int]) -> str:
    order = ("supported", "refuted", "inconclusive", "invalid")
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    decided = sum(counts.get(k, 0) for k in DECISIVE)
    return f"{decided} decided of {sum(counts.values())} (" + ", ".join(f"{counts[k]} {k}" for k in keys) + ")"


def comparison_text(c: Comparison) -> str:
    """The command's report: counts, then every cell that differs."""
    lines = [f"A: {c.label_a}: {_counts(c.counts_a)}", f"B: {c.label_b}: {_counts(c.counts_b)}",
             f"{c.shared} cells in both: {c.same} same verdict, {len(c.disagreements)} decisive in one "
             f"run only, {len(c.contradictions)} supported-vs-refuted contradictions"]
    for title, cells in (("contradiction", c.contradictions), ("disagreement", c.disagreements)):
        lines += [f"  {title}: {cell.claim}[{cell.protocol}]: A {cell.verdict_a}, B {cell.verdict_b}"
                  for cell in cells]
    for label, keys in (("A", c.only_a), ("B", c.only_b)):
        if keys:
            lines.append(f"  only in {label}: " + ", ".join(f"{k[0]}[{k[1]}]" for k in keys))
    return "\n".join(lines)


def comparison_json(c: Comparison) -> str:
    return json.dumps(c.to_json(), indent=2)
