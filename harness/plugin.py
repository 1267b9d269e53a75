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

PROFILES = {
    # name: (pairs, seeds, gen_tokens). quick: as many pairs (2 per group of the bundled
    # bank) as keep the toy's claims suite under 3 minutes on 2 CPU cores.
    "quick": (48, 6, 24),
    "full": (None, 16, 200),
}


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
    )


def _offset(config: pytest.Config) -> int:
    value = config.getoption("seed_offset")
    if value < 0:
        raise pytest.UsageError(f"--seed-offset {value}: expected a whole number >= 0 (0 is the default seed set)")
    return value


class HarnessSession:
    """What one pytest process shares: the options, the subject, the evaluator, the ledger."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = read_options(config)
        self.shard = _parse_shard(self.options.shard)
        self.collected_cells = 0
        #: Claim cells collected per finding name (the family of each finding).
        self.cells_by_finding: dict[str, int] = {}
        self._findings: dict[Path, Any] = {}
        self._family_ini = _family_ini(config)
        if not _is_worker(config):  # workers inherit the controller's checked settings
            self._check_inputs()
        self._subject: Any = None
        self._runner: Any = None
        self._evaluators: dict[str, Any] = {}
        self._ledgers: dict[str, Any] = {}
        self._pairs: dict[Path | None, list[Any]] = {}
        self._settings: dict[str, str] = {}
        self.previous_progress: Any = None

    def _check_inputs(self) -> None:
        """Refuse what cannot work now, in one line, before any weights load."""
        from harness.model import check_local_folder, is_local_spec
        from harness.preflight import check_named, preflight

        o = self.options
        if o.prompts is not None and not o.prompts.is_file():
            raise pytest.UsageError(f"--prompts {str(o.prompts)!r}: no such file")
        try:
            check_named(o, self.config.getoption("ledger"), self.config.getoption("pairs"))
            if o.model is not None and is_local_spec(o.model):
                check_local_folder(Path(o.model).expanduser(), allow_pickle=o.allow_pickle)
            preflight(o)
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None

    @property
    def family_size(self) -> int:
        return self._family_ini or max(self.collected_cells, 1)

    def finding_for(self, path: Path) -> Any:
        """The finding of a test file: the ``FINDING`` bound by the ``conftest.py`` of the
        nearest folder above it that has one; :data:`harness.finding.GENERIC` otherwise."""
        from harness.finding import GENERIC, Finding

        folder = Path(path).resolve().parent
        if folder not in self._findings:
            declared = {}
            for plugin in self.config.pluginmanager.get_plugins():
                found = getattr(plugin, "FINDING", None)
                where = getattr(plugin, "__file__", None)
                if isinstance(found, Finding) and where and Path(where).name == "conftest.py":
                    declared[Path(where).resolve().parent] = found
            names: dict[str, Path] = {}
            for where, found in declared.items():
                if names.setdefault(found.name, where) != where:
                    raise pytest.UsageError(f"finding name {found.name!r} is declared by both {names[found.name]} "
                                            f"and {where}; give each finding a name of its own")
            chosen = next((declared[d] for d in (folder, *folder.parents) if d in declared), GENERIC)
            self._findings[folder] = chosen
        return self._findings[folder]

    def finding_family(self, finding: Any) -> int:
        """The claim cells the family-wise level of ``finding`` covers: its own declaration,
        else the ini's ``harness_family_size``, else its cells collected in this run."""
        return finding.family_size or self._family_ini or max(self.cells_by_finding.get(finding.name, 0), 1)

    def subject(self) -> Any:
        if self._subject is None:
            from harness.model import load_subject

            o = self.options
            self._subject = load_subject(o.model, device=self.device(), dtype=o.dtype,
                                         allow_pickle=o.allow_pickle, trust_remote_code=o.trust_remote_code)
            _single_thread_for_small_cpu_models(self._subject)
        return self._subject

    def device(self) -> str:
        """The device of this process: under xdist, ``cuda`` pins worker k to ``cuda:k``."""
        device = self.options.device
        if device == "cuda" and _is_worker(self.config):
            import torch

            index = int(self.config.workerinput["workerid"].lstrip("gw"))
            count = torch.cuda.device_count()
            return f"cuda:{index % count}" if count else device
        return device

    def evaluator(self, finding: Any = None) -> Any:
        """The finding's evaluator (its metrics), on the one runner every finding shares."""
        from harness.finding import GENERIC

        finding = finding or GENERIC
        if finding.name not in self._evaluators:
            from harness.evaluate import Evaluator
            from harness.generate import Runner

            if self._runner is None:
                self._runner = Runner(self.subject(), max_batch=self.options.max_batch)
            self._evaluators[finding.name] = Evaluator(self._runner, finding=finding,
                                                      seed_offset=self.options.seed_offset)
        return self._evaluators[finding.name]

    def ledger(self, finding: Any = None) -> Any:
        """The known verdicts of ``finding``: ``--ledger`` when given, else the finding's own."""
        from harness.finding import GENERIC
        from harness.ledger import Ledger

        finding = finding or GENERIC
        if finding.name not in self._ledgers:
            path = self.options.ledger or finding.ledger_path
            self._ledgers[finding.name] = Ledger.load(path) if path is not None else Ledger()
        return self._ledgers[finding.name]

    def protocol(self, name: str) -> Any:
        from harness.records import get_protocol

        return get_protocol(name).with_(gen_tokens=self.options.gen_tokens)

    def bank(self, finding: Any = None) -> Path | None:
        """The prompt bank of ``finding``: ``--prompts`` when given, else the finding's own
        (None: the bundled toy bank)."""
        if self.options.prompts is not None:
            return self.options.prompts
        if finding is None:
            return None
        finding.check_bank()
        return finding.bank_path

    def pairs(self, finding: Any = None) -> list[Any]:
        bank = self.bank(finding)
        if bank not in self._pairs:
            from harness.prompts import default_pairs, load_pairs, spread

            self._pairs[bank] = spread(load_pairs(bank) if bank else default_pairs(), self.options.pairs)
        return self._pairs[bank]

    def settings(self, finding: Any = None) -> str:
        """What a verdict was measured with: the ledger key beside the model identity.

        Computed once per finding, at its first claim: collection (and so the family) is over by then.
        """
        from harness.finding import GENERIC

        finding = finding or GENERIC
        if finding.name not in self._settings:
            from harness.claims import RULE_VERSION, describe_settings
            from harness.prompts import DEFAULT_PROMPTS, file_hash

            o = self.options
            bank = self.bank(finding)
            self._settings[finding.name] = describe_settings({
                "pairs": len(self.pairs(finding)), "seeds": o.seeds, "tokens": o.gen_tokens, "dtype": o.dtype,
                "prompts": file_hash(bank or DEFAULT_PROMPTS)[:12], "rule": RULE_VERSION,
                "family": self.finding_family(finding), "seed_offset": o.seed_offset,
            })
        return self._settings[finding.name]

    def provenance(self, subject: Any, finding: Any = None) -> dict[str, Any]:
        """What identifies this run: settings, the subject and the software."""
        import torch
        import transformers

        from harness.model import device_map
        from harness.finding import GENERIC
        from harness.records import PROTOCOLS

        o = self.options
        return {
            "model": o.model or "toy", "model_identity": subject.identity,
            "model_path": _shown_path(subject.path) or subject.name, "weights_sha256": subject.weights_hash,
            "tokenizer_sha256": subject.tokenizer_hash, "bos": subject.tokenizer.bos_token_id is not None,
            "n_layers": subject.n_layers, "device": subject.device, "dtype": subject.dtype,
            "device_map": device_map(subject.model),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "pairs": len(self.pairs(finding)), "pair_ids": [p.id for p in self.pairs(finding)],
            "seeds_per_pair": o.seeds, "seed_offset": o.seed_offset, "gen_tokens": o.gen_tokens,
            "prompts": str(_shown_path(str(self.bank(finding))) if self.bank(finding) else "bundled toy bank"),
            "profile": o.profile, "settings": self.settings(finding), "family_size": self.finding_family(finding),
            "finding": (finding.name if finding else "generic"),
            "protocols": {name: {**dataclasses.asdict(self.protocol(name)),
                                 "metric": self.protocol(name).metric or (finding or GENERIC).metric_for(name)}
                          for name in PROTOCOLS},
            "metrics": [{"name": m.name, "floor": m.floor, "description": m.description, "bounds": m.bounds}
                        for m in (finding or GENERIC).metric_table().values()],
        }

    # -- hooks (the session object is registered as a plugin) -----------------------

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        # Counted before any -k, --lf or --shard deselection: the family is the suite.
        if "verify" in getattr(item, "fixturenames", ()):
            self.collected_cells += 1
            name = self.finding_for(item.path).name
            self.cells_by_finding[name] = self.cells_by_finding.get(name, 0) + 1

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.shard is None:
            return
        index, count = self.shard
        ordered = sorted(items, key=lambda item: item.nodeid)
        keep = {item.nodeid for i, item in enumerate(ordered) if i % count == index - 1}
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
        items[:] = [item for item in items if item.nodeid in keep]


_SESSION = pytest.StashKey[HarnessSession]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _shown_path(path: str | None) -> str | None:
    """A model folder as a report shows it: the embedded toy relative to the package, so a
    committed report names no machine's folders."""
    if not path:
        return None
    from harness.toy import TOY_MODEL_DIR

    try:
        return "harness/" + str(Path(path).resolve().relative_to(TOY_MODEL_DIR.parent.parent.resolve()))
    except ValueError:
        return path


def _family_ini(config: pytest.Config) -> int:
    text = str(config.getini("harness_family_size") or "").strip()
    if not text:
        return 0
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"harness_family_size = {text!r} in the ini file: expected a positive integer")
    return int(text)


def _single_thread_for_small_cpu_models(subject: Any) -> None:
    """Matrices of a few-MB model are too small for intra-op threads to pay; on a busy
    machine (or beside other xdist workers) their spin-waits slow decoding many times."""
    import torch

    n_params = sum(p.numel() for p in subject.model.parameters())
    if subject.device == "cpu" and n_params < 50_000_000:
        torch.set_num_threads(1)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise pytest.UsageError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 2/4")
    return index, count


def pytest_configure(config: pytest.Config) -> None:
    # Tokenizers' own thread pool would warn (and can deadlock) once xdist forks workers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    session = HarnessSession(config)
    config.stash[_SESSION] = session
    config.pluginmanager.register(session, "harness-session")
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
            evaluation = session.evaluator(finding).evaluate(
                claim, pairs, session.protocol(protocol), n_seeds=session.options.seeds,
                family_size=session.finding_family(finding))
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
