"""The harness's pytest plugin: options, one session object, fixtures, hooks.

Importing this module loads neither torch nor transformers: the model loads on
first use of the ``subject`` fixture, once per worker process. The run's report is
written by :class:`harness.collector.Collector`, registered on the controlling
process only (as pytest's own junitxml plugin is).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.preflight import DECODINGS, PROFILES
from harness.session import HarnessSession, _is_worker, extends


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "claims harness (model under study, sampling, reports)")
    group.addoption("--model", default=None, metavar="PATH_OR_ID",
                    help="model folder or hub id to study (default: the embedded toy model)")
    group.addoption("--device", default="cpu", metavar="DEVICE",
                    help="cpu, cuda, cuda:N, mps, or auto for device_map=auto (default: cpu)")
    group.addoption("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                    help="weights dtype (default: float32)")
    group.addoption("--prompts", default=None, metavar="FILE",
                    help="JSONL file of pairs, one {\"baseline\", \"champion\", \"id\"?} per line "
                         "(default: the bundled toy bank)")
    group.addoption("--profile", default="quick", choices=tuple(PROFILES),
                    help="quick: 48 pairs, 6 seeds, 24 tokens; full: every pair, 16 seeds, the "
                         "original's 200 tokens (default: quick)")
    group.addoption("--pairs", type=int, default=None, metavar="N",
                    help="use N pairs spread evenly over the bank (default: from --profile)")
    group.addoption("--seeds", type=int, default=None, metavar="N",
                    help="samples per arm and pair, with seeds of the pair's own, shared by its arms "
                         "(default: from --profile)")
    group.addoption("--gen-tokens", type=int, default=None, metavar="N",
                    help="tokens generated per sample (default: from --profile)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where the run's report is written (default: reports/<run-id>); a folder that "
                         "holds another run is refused")
    group.addoption("--report-fresh", action="store_true", default=False,
                    help="replace the run already in --report-dir (its report files are removed at the start)")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run only slice I of N (1 <= I <= N) of the claim cells, for several machines; "
                         "merge the reports with: python -m harness.report merge")
    group.addoption("--ledger", default=None, metavar="FILE",
                    help="known verdicts to compare with (default: each finding's own ledger.toml)")
    group.addoption("--ledger-strict", action="store_true", default=False,
                    help="fail a claim that is not supported when the ledger has no entries for the run's "
                         "model and settings (default: such verdicts are reported, not judged)")
    group.addoption("--allow-pickle", action="store_true", default=False,
                    help="allow pickle checkpoints (*.bin); loading pickle runs code from the file")
    group.addoption("--trust-remote-code", action="store_true", default=False,
                    help="allow the model's own Python code from the hub to run")
    group.addoption("--max-batch", type=int, default=None, metavar="N",
                    help="at most N rows (pairs x seeds) per generate call (default: from free GPU memory; "
                         "512 on the CPU)")
    group.addoption("--seed-offset", type=int, default=0, metavar="K",
                    help="draw seed set K of every pair instead of the default set 0 (another sample of the "
                         "same claims: a seed-sensitivity check; recorded in the report and the ledger key)")
    group.addoption("--until-decided", type=int, default=None, metavar="N",
                    help="add pairs of the bank in batches to each undecided cell until it is decided or "
                         "has N pairs; verdicts then come from the sequential (anytime-valid) betting test")
    group.addoption("--decoding", default="dynamic", choices=DECODINGS,
                    help="dynamic: the reference cache, grown each step; static: preallocated (transformers 5; "
                         "faster on the toy); compiled: static with the decoding step compiled, CUDA graphs "
                         "on a GPU. A row may differ in a near-tie's rounding; recorded in the report "
                         "(default: dynamic)")
    group.addoption("--allow-long", action="store_true", default=False,
                    help="allow --gen-tokens above 1024 (every arm, pair and seed pays for it)")
    parser.addini("harness_progress_after", type="string", default="",
                  help="seconds a claim runs before its progress is shown (default: 10, or 60 under -q)")
    parser.addini("harness_family_size", type="string", default="",
                  help="number of claim cells in the claims suite: the family whose chance of any false "
                       "decisive verdict is held at 5% (default: the claim cells collected)")


def _positive(config: pytest.Config, name: str) -> int | None:
    value = config.getoption(name)
    if value is not None and value < 1:
        raise pytest.UsageError(f"--{name.replace('_', '-')} {value}: expected a positive integer")
    return value


def read_options(config: pytest.Config) -> Any:
    """The run's settings, read once from the command line into a frozen record."""
    from harness.preflight import RunOptions

    opt = config.getoption
    pairs, seeds, tokens = PROFILES[opt("profile")]
    prompts, report_dir = opt("prompts"), opt("report_dir")
    return RunOptions(
        model=opt("model"), device=opt("device"), dtype=opt("dtype"),
        prompts=Path(prompts) if prompts else None, profile=opt("profile"),
        pairs=_positive(config, "pairs") or pairs, seeds=_positive(config, "seeds") or seeds,
        gen_tokens=_positive(config, "gen_tokens") or tokens,
        report_dir=Path(report_dir) if report_dir else config.rootpath / "reports" / time.strftime("%Y%m%d-%H%M%S"),
        ledger=Path(opt("ledger")) if opt("ledger") else None,
        shard=opt("shard"), allow_pickle=opt("allow_pickle"),
        trust_remote_code=opt("trust_remote_code"), allow_long=opt("allow_long"),
        max_batch=_positive(config, "max_batch"), seed_offset=_offset(config),
        report_fresh=opt("report_fresh"), report_dir_named=bool(report_dir), ledger_strict=opt("ledger_strict"),
        until_decided=_positive(config, "until_decided"), decoding=opt("decoding"),
    )


def _offset(config: pytest.Config) -> int:
    value = config.getoption("seed_offset")
    if value < 0:
        raise pytest.UsageError(f"--seed-offset {value}: expected a whole number >= 0 (0 is the default seed set)")
    return value


_SESSION = pytest.StashKey[HarnessSession]()


def pytest_configure(config: pytest.Config) -> None:
    # Tokenizers' own thread pool would warn (and can deadlock) once xdist forks workers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    session = HarnessSession(config, read_options(config))
    config.stash[_SESSION] = session
    if not _is_worker(config):
        from harness.collector import Collector

        try:
            collector = Collector(config, session.options)
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.pluginmanager.register(collector, "harness-collector")
    else:  # a worker's output is not seen: it only counts each claim's work for the controller
        from harness.progress import Reporter, install

        session.previous_progress = install(Reporter(sink=None))


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None and session.previous_progress is not None:
        from harness.progress import install

        install(session.previous_progress)


def harness_session(config: pytest.Config) -> HarnessSession:
    return config.stash[_SESSION]


# -- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def subject(pytestconfig: pytest.Config) -> Any:
    """The model under study, loaded once per worker process."""
    try:
        return harness_session(pytestconfig).subject()
    except HarnessError as exc:
        pytest.exit(f"cannot load the model: {exc}", returncode=4)


@pytest.fixture
def finding(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Any:
    """The finding of this test's folder (see :mod:`harness.finding`)."""
    return harness_session(pytestconfig).finding_for(request.node.path)


@pytest.fixture
def pairs(pytestconfig: pytest.Config, finding: Any) -> list[Any]:
    """The (baseline, champion) pairs of this test's finding in this run."""
    try:
        return harness_session(pytestconfig).pairs(finding)
    except HarnessError as exc:
        pytest.exit(f"cannot read the prompts: {exc}", returncode=4)


@pytest.fixture
def verify(request: pytest.FixtureRequest, pytestconfig: pytest.Config, subject: Any, finding: Any,
           pairs: list[Any]) -> Callable[..., Any]:
    """Evaluate a claim (under a protocol, unless it is protocol-independent), record it,
    and pass, xfail or fail by the ledger.

    An exception inside the evaluation is an error of the test, never an expected failure.
    """
    from harness import progress
    from harness.ledger import judge

    session = harness_session(pytestconfig)

    def _verify(claim: Any, protocol: str = "corrected") -> Any:
        with progress.claim(f"{claim.id} [{protocol}]") as cost:
            for cell_pairs in session.pair_batches(finding):
                evaluation = session.evaluator(finding).evaluate(
                    claim, cell_pairs, session.protocol(protocol), n_seeds=session.options.seeds,
                    family_size=session.finding_family(finding))
                if not extends(evaluation.row):
                    break
        row = evaluation.row
        settings = session.settings(finding)
        ledger = session.ledger(finding)
        entry = ledger.lookup(subject.identity, settings, row.claim, row.protocol)
        covers = ledger.covers(subject.identity, settings)
        outcome = judge(row.verdict, entry, covered=covers, strict=session.options.ledger_strict)
        expected = entry.verdict if entry else "" if outcome.kind == "unjudged" else "supported"
        row = dataclasses.replace(row, model=subject.identity, settings=settings, outcome=outcome.kind,
                                  expected=expected)
        payload = {"claim": row.to_json(), "samples": [s.to_json() for s in evaluation.samples],
                   "provenance": session.provenance(subject, finding),
                   "ledger_covers": covers,
                   "work": cost.work.as_dict() if cost.work else None}
        request.node.user_properties.append(("harness", json.dumps(payload, default=str)))
        label = f"{row.claim}[{row.protocol}]"
        if outcome.kind == "xfail" or (outcome.kind == "unjudged" and row.verdict != "supported"):
            pytest.xfail(f"{label}: {outcome.message}")
        if outcome.kind == "fail":
            pytest.fail(f"{label}: {outcome.message}. Why: {row.reason}", pytrace=False)
        return row

    return _verify


def _hooks_on(model: Any) -> list[str]:
    left = []
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks"):
            hooks = getattr(module, kind, None)
            if hooks:
                left.append(f"{name or '<root>'}.{kind[1:-1]} x{len(hooks)}")
                hooks.clear()
                getattr(module, f"{kind}_with_kwargs", {}).clear()
    return left


@pytest.fixture(autouse=True)
def _no_hook_left_on_subject(request: pytest.FixtureRequest) -> Any:
    """Fail a test that leaves a forward hook or pre-hook on the subject's model."""
    yield
    if "subject" not in request.fixturenames:
        return
    left = _hooks_on(request.getfixturevalue("subject").model)
    if left:
        pytest.fail(f"test left hooks on the model (removed now): {', '.join(left)}", pytrace=False)


# -- hooks -------------------------------------------------------------------


def pytest_itemcollected(item: pytest.Item) -> None:
    # Counted before any -k, --lf or --shard deselection: the family is the suite.
    if "verify" in getattr(item, "fixturenames", ()):
        harness_session(item.config).add_cell(item.path)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = harness_session(config).shard
    if shard is None:
        return
    index, count = shard
    ordered = sorted(items, key=lambda item: item.nodeid)
    keep = {item.nodeid for i, item in enumerate(ordered) if i % count == index - 1}
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
    items[:] = [item for item in items if item.nodeid in keep]
