"""The per-layer participation-ratio profile: champion vs baseline prompts, with bands."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.report.schema import ClaimRow

__all__ = ["profile_series", "plot_profile"]


def profile_series(claims: Sequence[ClaimRow]) -> dict[str, Any] | None:
    """The first PR profile carried by a claim row (relay claims carry one), or None."""
    for row in claims:
        if row.series:
            data = json.loads(row.series)
            if "layers" in data and "champion" in data and "baseline" in data:
                return data
    return None


def plot_profile(data: dict[str, Any], path: Path, marks: Sequence[int] = (18, 25, 27)) -> None:
    """PR of V per layer (as written for 32 layers), mean line and 95% band per prompt group."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    layers = data["layers"]
    for role, colour in (("champion", "tab:purple"), ("baseline", "tab:gray")):
        series = data[role]
        mean = [_nan(v) for v in series["mean"]]
        ax.plot(layers, mean, color=colour, label=f"{role} prompts")
        ax.fill_between(layers, [_nan(v) for v in series["low"]], [_nan(v) for v in series["high"]],
                        color=colour, alpha=0.2, linewidth=0)
    for layer in marks:
        ax.axvline(layer, color="0.8", linewidth=0.8, linestyle=":", zorder=0)
    ax.set_xlabel("layer (as written for 32 layers; L18 inhale, L25 transition, L27 exhale)")
    ax.set_ylabel("participation ratio of V, last 16 prompt positions")
    ax.set_title("PR of V per layer: champion vs baseline (mean, 95% band over pairs)")
    ax.legend(fontsize=8)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)
