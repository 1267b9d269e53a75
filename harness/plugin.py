"""The harness's pytest plugin: options, one session object, fixtures, hooks.

Importing this module loads neither torch nor transformers: the model loads on
first use of the ``subject`` fixture, once per worker process.
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
    # name: (pairs, seeds, gen_tokens)
    "quick": (6, 6, 24),
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
                    help="quick: few pairs, seeds and tokens; full: every pair, 16 seeds, the "
                         "original's 200 tokens (default: quick)")
    group.addoption("--pairs", type=int, default=None, metavar="N",
                    help="use N pairs spread evenly over the bank (default: from --profile)")
    group.addoption("--seeds", type=int, default=None, metavar="N",
                    help="samples per arm and pair, seeds 0..N-1, paired across arms "
                         "(default: from --profile)")
    group.addoption("--gen-tokens", type=int, default=None, metavar="N",
                    help="tokens generated per sample (default: from --profile)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where the run's report is written (default: reports/<run-id>)")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run only slice I of N (1 <= I <= N) of the claim cells, for several machines; "
                         "merge the reports with `python -m harness.report merge`")
    group.addoption("--ledger", default=None, metavar="FILE",
                    help="known verdicts to compare with (default: claims/ledger.toml under the rootdir)")
    group.addoption("--allow-pickle", action="store_true", default=False,
                    help="allow pickle checkpoints (*.bin); loading pickle runs code from the file")
    group.addoption("--trust-remote-code", action="store_true", default=False,
                    help="allow the model's own Python code from the hub to run")


    group.addoption("--allow-long", action="store_true", default=False,
                    help="allow --gen-tokens above 1024 (every arm, pair and seed pays for it)")


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
        report_dir=Path(report_dir) if report_dir else None,
        ledger=Path(opt("ledger")) if opt("ledger") else config.rootpath / "claims" / "ledger.toml",
        shard=opt("shard"), allow_pickle=opt("allow_pickle"),
        trust_remote_code=opt("trust_remote_code"), allow_long=opt("allow_long"),
    )


class HarnessSession:
    """Everything the plugin shares across one pytest process: options, the subject."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = read_options(config)
        self.shard = _parse_shard(self.options.shard)
        self.run_id = time.strftime("%Y%m%d-%H%M%S")
        if not _is_worker(config):  # workers inherit the controller's checked settings
            self._check_inputs()
        self.n_pairs, self.n_seeds, self.gen_tokens = self.options.pairs, self.options.seeds, self.options.gen_tokens
        self.prompts_file = self.options.prompts
        self.missing: list[str] = []
        self._subject: Any = None
        self._subject_provenance: dict[str, Any] | None = None
        self._arms: Any = None
        self._ledger: Any = None
        self.writer: Any = None

    def _check_inputs(self) -> None:
        """Refuse what cannot work now, in one line, before any weights load."""
        from harness.model import check_local_folder, is_local_spec
        from harness.preflight import preflight
        from harness.prompts import load_pairs

        options = self.options
        if options.prompts is not None and not options.prompts.is_file():
            raise pytest.UsageError(f"--prompts {str(options.prompts)!r}: no such file")
        try:
            if options.prompts is not None:
                load_pairs(options.prompts)
            if options.model is not None and is_local_spec(options.model):
                check_local_folder(Path(options.model).expanduser(), allow_pickle=options.allow_pickle)
            preflight(dataclasses.replace(options, report_dir=self.report_dir()))
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.n_seeds))

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

    def provenance_of(self, subject: Any) -> dict[str, Any]:
        """What identifies the subject and the software, computed where the model is loaded."""
        if self._subject_provenance is not None:
            return self._subject_provenance
        import dataclasses

        import torch
        import transformers

        from harness.generate import PROTOCOLS

        self._subject_provenance = {
            "model_identity": subject.identity, "model_path": subject.path or subject.name,
            "weights_sha256": subject.weights_hash, "tokenizer_sha256": subject.tokenizer_hash,
            "n_layers": subject.n_layers, "device": subject.device, "dtype": subject.dtype,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "protocols": {name: dataclasses.asdict(self.protocol(name)) for name in PROTOCOLS},
        }
        return self._subject_provenance

    def arm_cache(self) -> Any:
        if self._arms is None:
            from harness.claims import ArmCache
            from harness.generate import Runner

            self._arms = ArmCache(Runner(self.subject()))
        return self._arms

    def ledger(self) -> Any:
        if self._ledger is None:
            from harness.ledger import Ledger

            self._ledger = Ledger.load(self.options.ledger)
        return self._ledger

    def protocol(self, name: str) -> Any:
        from harness.generate import get_protocol

        return get_protocol(name).with_(gen_tokens=self.gen_tokens)

    def report_dir(self) -> Path:
        given = self.options.report_dir
        return given if given else self.config.rootpath / "reports" / self.run_id

    def provenance(self) -> dict[str, Any]:
        o = self.options
        return {"run_id": self.run_id, "model": o.model or "toy", "device": o.device,
                "dtype": o.dtype, "pairs": self.n_pairs, "seeds": list(self.seeds),
                "gen_tokens": self.gen_tokens, "prompts": str(self.prompts_file or "bundled toy bank"),
                "profile": o.profile, "shard": o.shard, "harness_commit": _git_commit(self.config.rootpath),
                "command": " ".join(["pytest", *self.config.invocation_params.args])}

    # -- hooks: the session object is registered as a plugin -----------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect claim rows where the run's files are written (the controller under xdist).

        A claim test that failed without a row (an error, a crashed worker) is
        remembered, and the report is marked incomplete.
        """
        if _is_worker(self.config):
            return
        payloads = [json.loads(v) for k, v in report.user_properties if k == "harness"]
        if report.when != "call":  # setup and teardown reports repeat the call's properties
            payloads = []
        if not payloads:
            if report.failed and "claims/" in report.nodeid.replace("\\", "/"):
                self.missing.append(report.nodeid)
            return
        if self.writer is None:
            from harness.report import RunWriter

            self.writer = RunWriter(self.report_dir(), self.provenance(),
                                    latest=self.config.rootpath / "reports" / "latest")
        for payload in payloads:
            self.writer.provenance.update(payload["provenance"])
            self.writer.add(payload["claim"], payload["rows"])

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.shard is None:
            return
        index, count = self.shard
        ordered = sorted(items, key=lambda item: item.nodeid)
        keep = {item.nodeid for i, item in enumerate(ordered) if i % count == index - 1}
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
        items[:] = [item for item in items if item.nodeid in keep]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.writer is None or _is_worker(self.config):
            return
        interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        if interrupted or session.shouldstop:
            self.writer.provenance["stopped"] = "interrupted" if interrupted else str(session.shouldstop)
        if self.missing:
            self.writer.provenance["missing"] = sorted(self.missing)
        self.writer.close(complete=not (interrupted or session.shouldstop or self.missing))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.writer is None or not self.writer.claims:
            return
        from tabulate import tabulate

        cols = ("claim", "protocol", "efficiency", "ci_low", "ci_high", "verdict", "expected", "outcome")
        rows = [[r.get(c) for c in cols]
                for r in sorted(self.writer.claims, key=lambda r: (r["claim"], r["protocol"]))]
        terminalreporter.section("claims")
        terminalreporter.write_line(tabulate(rows, headers=cols, floatfmt=".3f", missingval="nan"))
        terminalreporter.write_line(f"report: {self.writer.directory}")

    def pairs(self) -> list[Any]:
        from harness.prompts import default_pairs, load_pairs, spread

        return spread(load_pairs(self.prompts_file) if self.prompts_file else default_pairs(), self.n_pairs)


_SESSION = pytest.StashKey[HarnessSession]()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


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


def _git_commit(root: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def pytest_configure(config: pytest.Config) -> None:
    # Tokenizers' own thread pool would warn (and can deadlock) once xdist forks workers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    session = HarnessSession(config)
    config.stash[_SESSION] = session
    config.pluginmanager.register(session, "harness-session")


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


@pytest.fixture(scope="session")
def pairs(pytestconfig: pytest.Config) -> list[Any]:
    """The (baseline, champion) pairs of this run."""
    try:
        return harness_session(pytestconfig).pairs()
    except HarnessError as exc:
        pytest.exit(f"cannot read the prompts: {exc}", returncode=4)


@pytest.fixture
def verify(request: pytest.FixtureRequest, pytestconfig: pytest.Config, subject: Any,
           pairs: list[Any]) -> Callable[[Any, str], Any]:
    """Evaluate a claim under a protocol, record it, and pass, xfail or fail by the ledger.

    An exception inside the evaluation is an error of the test, never an expected failure.
    """
    from harness.claims import evaluate
    from harness.ledger import judge
    from harness.report import sample_rows

    session = harness_session(pytestconfig)

    def _verify(claim: Any, protocol: str) -> Any:
        result = evaluate(claim, session.arm_cache(), pairs, session.protocol(protocol), session.seeds)
        entry = session.ledger().lookup(subject.identity, claim.id, protocol)
        outcome = judge(result.verdict, entry)
        row = dict(result.row(), model=subject.identity, outcome=outcome.kind,
                   expected=entry.verdict if entry else "supported")
        samples = sample_rows(result.arm_results, {p.id: p for p in pairs})
        payload = {"claim": row, "rows": samples, "provenance": session.provenance_of(subject)}
        request.node.user_properties.append(("harness", json.dumps(payload, default=str)))
        if outcome.kind == "xfail":
            pytest.xfail(f"{claim.id}[{protocol}]: {outcome.message}")
        if outcome.kind == "fail":
            pytest.fail(f"{claim.id}[{protocol}]: {outcome.message}. Why: {result.reason}", pytrace=False)
        return result

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

