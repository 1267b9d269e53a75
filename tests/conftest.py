"""Shared test settings for the harness's own tests."""

from __future__ import annotations

import pytest
from tiny import OPT_IN, opt_in


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs started by these tests must not append to a real CI job's summary page."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's own ``pytester``, opted in to the harness's plugin (it is not loaded by merely being
    installed): ``-p harness.plugin`` on every run started from the test (``runpytest`` in or out
    of process, a ``python -m pytest`` of its own; through ``PYTEST_ADDOPTS``, which pytester
    clears before this fixture runs), and a rootdir ``conftest.py`` naming it, as a user's has.

    The ``-p`` matters when an option's value is a path outside the folder (``--prompts /tmp/x``):
    before the plugin's options are known, pytest takes such a value for a test path, and the
    folder's conftest is then not the rootdir's."""
    opt_in(pytester.path)
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(OPT_IN))
    return pytester
