"""The Student t distribution: quantiles against tables, closed forms and the density."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.errors import HarnessValueError
from harness.tdist import t_quantile, t_sf

FAMILY = 27  # claim cells of a run at the time of the coverage study (docs/statistics.md)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [(0.975, 5, 2.570582), (0.975, 11, 2.200985), (0.975, 30, 2.042272), (0.995, 11, 3.105807),
     (0.999, 11, 4.024701), (0.95, 1, 6.313752), (0.9995, 1, 636.6192), (0.995, 30, 2.749996)],
)
def test_t_quantile_table_values(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6, rel=1e-7)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-6, rel=1e-7)


@pytest.mark.parametrize("p", [0.5001, 0.6, 0.8, 0.975, 1 - 0.025 / FAMILY, 0.9999, 1 - 1e-5, 1 - 1e-7])
def test_t_quantile_matches_closed_forms(p):
    # df 1, 2 and 4 have closed-form quantiles; the far tail is where approximations break.
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    a = 4 * p * (1 - p)
    q = math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a)
    assert t_quantile(p, 4) == pytest.approx(2 * math.sqrt(q - 1), rel=1e-8)


@pytest.mark.parametrize("df", [5, 11, 23, 47, 2.5])
@pytest.mark.parametrize("p", [0.8, 0.975, 1 - 0.025 / FAMILY])
def test_t_quantile_inverts_the_density(df, p):
    # Independent check: integrate the t density from 0 to the quantile (Simpson, 20001 nodes).
    q = t_quantile(p, df)
    t = np.linspace(0.0, q, 20001)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(logc - (df + 1) / 2 * np.log1p(t * t / df))
    h = q / 20000
    integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    assert integral == pytest.approx(p - 0.5, abs=1e-11)
    assert t_sf(q, df) == pytest.approx(1 - p, rel=1e-9)


def test_bonferroni_quantile_for_27_cells():
    # t_{1 - 0.025/27, 11}: the per-cell 99.81% interval at 12 pairs is 1.85x the 95% one.
    q = t_quantile(1 - 0.025 / 27, 11)
    assert q == pytest.approx(4.069864, abs=1e-6)
    assert q / t_quantile(0.975, 11) == pytest.approx(1.849, abs=1e-3)


@pytest.mark.parametrize(("p", "df"), [(0.0, 5), (1.0, 5), (math.nan, 5), (0.9, 0.5), (0.9, math.inf)])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(HarnessValueError):
        t_quantile(p, df)


