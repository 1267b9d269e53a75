"""Shared test settings for the harness's own tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs started by these tests must not append to a real CI job's summary page."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
