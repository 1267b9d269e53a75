"""Shared test settings for the harness's own tests.

The default run leaves out the tests listed in ``slow.txt`` (each took 8 s or more on 2 CPU
cores: whole claims runs in a subprocess, every family's identities over the bank) so that
``pytest`` stays within a few minutes; ``--run-slow`` runs them too, as CI does. Regenerate the
list from ``pytest tests --run-slow --durations=0``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import OPT_IN, opt_in

SLOW = Path(__file__).with_name("slow.txt")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the harness's slow tests (tests/slow.txt; CI runs them)")


def _slow_ids() -> set[str]:
    return {line.strip() for line in SLOW.read_text().splitlines() if line.strip() and not line.startswith("#")}


@pytest.hookimpl(tryfirst=True)  # the marks are in place before ``-m`` selects on them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = _slow_ids()
    for item in items:
        if _test_id(item) in slow:
            item.add_marker(pytest.mark.slow)
    if config.getoption("run_slow"):
        return
    kept = [item for item in items if item.get_closest_marker("slow") is None]
    left_out = [item for item in items if item.get_closest_marker("slow") is not None]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def _test_id(item: pytest.Item) -> str:
    """The item's id from the repository root, as ``--durations`` prints it."""
    return "tests/" + item.nodeid.split("tests/", 1)[-1]


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
