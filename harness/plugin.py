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
                    help="where the run's report is written (default: reports/<run-id>)")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run only slice I of N (1 <= I <= N) of the claim cells, for several machines; "
                         "merge the reports with: python -m harness.report merge")
    group.addoption("--ledger", default=None, metavar="FILE",
                    help="known verdicts to compare with (default: claims/ledger.toml under the rootdir)")
    group.addoption("--allow-pickle", action="store_true", default=False,
                    help="allow pickle checkpoints (*.bin); loading pickle runs code from the file")
    group.addoption("--trust-remote-code", action="store_true", default=False,
                    help="allow the model's own Python code from the hub to run")
    group.addoption("--max-batch", type=int, default=None, metavar="N",
                    help="at most N rows (pairs x seeds) per generate call (default: from free GPU memory; "
                         "512 on the CPU)")
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
        ledger=Path(opt("ledger")) if opt("ledger") else config.rootpath / "claims" / "ledger.toml",
        shard=opt("shard"), allow_pickle=opt("allow_pickle"),
        trust_remote_code=opt("trust_remote_code"), allow_long=opt("allow_long"),
        max_batch=_positive(config, "max_batch"),
    )


class HarnessSession:
    """What one pytest process shares: the options, the subject, the evaluator, the ledger."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = read_options(config)
        self.shard = _parse_shard(self.options.shard)
        self.collected_cells = 0
        self._family_ini = _family_ini(config)
        if not _is_worker(config):  # workers inherit the controller's checked settings
            self._check_inputs()
        self._subject: Any = None
        self._evaluator: Any = None
        self._ledger: Any = None
        self._pairs: list[Any] | None = None
        self._settings: str | None = None
        self.previous_progress: Any = None

    def _check_inputs(self) -> None:
        """Refuse what cannot work now, in one line, before any weights load."""
        from harness.model import check_local_folder, is_local_spec
        from harness.preflight import preflight
        from harness.prompts import load_pairs

        o = self.options
        if o.prompts is not None and not o.prompts.is_file():
            raise pytest.UsageError(f"--prompts {str(o.prompts)!r}: no such file")
        try:
            if o.prompts is not None:
                load_pairs(o.prompts)
            if o.model is not None and is_local_spec(o.model):
                check_local_folder(Path(o.model).expanduser(), allow_pickle=o.allow_pickle)
            preflight(o)
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None

    @property
    def family_size(self) -> int:
        return self._family_ini or max(self.collected_cells, 1)

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

    def evaluator(self) -> Any:
        if self._evaluator is None:
            from harness.evaluate import Evaluator
            from harness.generate import Runner

            self._evaluator = Evaluator(Runner(self.subject(), max_batch=self.options.max_batch))
        return self._evaluator

    def ledger(self) -> Any:
        if self._ledger is None:
            from harness.ledger import Ledger

            self._ledger = Ledger.load(self.options.ledger)
        return self._ledger

    def protocol(self, name: str) -> Any:
        from harness.records import get_protocol

        return get_protocol(name).with_(gen_tokens=self.options.gen_tokens)

    def pairs(self) -> list[Any]:
        if self._pairs is None:
            from harness.prompts import default_pairs, load_pairs, spread

            o = self.options
            self._pairs = spread(load_pairs(o.prompts) if o.prompts else default_pairs(), o.pairs)
        return self._pairs

    def settings(self) -> str:
        """What a verdict was measured with: the ledger key beside the model identity.

        Computed once, at the first claim: collection (and so the family) is over by then.
        """
        if self._settings is None:
            from harness.claims import RULE_VERSION, describe_settings
            from harness.prompts import DEFAULT_PROMPTS, file_hash

            o = self.options
            self._settings = describe_settings({
                "pairs": len(self.pairs()), "seeds": o.seeds, "tokens": o.gen_tokens, "dtype": o.dtype,
                "prompts": file_hash(o.prompts or DEFAULT_PROMPTS)[:12], "rule": RULE_VERSION,
                "family": self.family_size,
            })
        return self._settings

    def provenance(self, subject: Any) -> dict[str, Any]:
        """What identifies this run: settings, the subject and the software."""
        import torch
        import transformers

        from harness.records import PROTOCOLS

        o = self.options
        return {
            "model": o.model or "toy", "model_identity": subject.identity,
            "model_path": _shown_path(subject.path) or subject.name, "weights_sha256": subject.weights_hash,
            "tokenizer_sha256": subject.tokenizer_hash, "bos": subject.tokenizer.bos_token_id is not None,
            "n_layers": subject.n_layers, "device": subject.device, "dtype": subject.dtype,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "pairs": len(self.pairs()), "pair_ids": [p.id for p in self.pairs()], "seeds_per_pair": o.seeds,
            "gen_tokens": o.gen_tokens, "prompts": str(o.prompts or "bundled toy bank"),
            "profile": o.profile, "settings": self.settings(), "family_size": self.family_size,
            "protocols": {name: dataclasses.asdict(self.protocol(name)) for name in PROTOCOLS},
        }

    # -- hooks (the session object is registered as a plugin) -----------------------

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        # Counted before any -k, --lf or --shard deselection: the family is the suite.
        if "verify" in getattr(item, "fixturenames", ()):
            self.collected_cells += 1

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

        config.pluginmanager.register(Collector(config, session.options), "harness-collector")
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


@pytest.fixture(scope="session")
def pairs(pytestconfig: pytest.Config) -> list[Any]:
    """The (baseline, champion) pairs of this run."""
    try:
        return harness_session(pytestconfig).pairs()
    except HarnessError as exc:
        pytest.exit(f"cannot read the prompts: {exc}", returncode=4)


@pytest.fixture
def verify(request: pytest.FixtureRequest, pytestconfig: pytest.Config, subject: Any,
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
            evaluation = session.evaluator().evaluate(
                claim, pairs, session.protocol(protocol), n_seeds=session.options.seeds,
                family_size=session.family_size)
        row = evaluation.row
        settings = session.settings()
        ledger = session.ledger()
        entry = ledger.lookup(subject.identity, settings, row.claim, row.protocol)
        outcome = judge(row.verdict, entry)
        row = dataclasses.replace(row, model=subject.identity, settings=settings, outcome=outcome.kind,
                                  expected=entry.verdict if entry else "supported")
        payload = {"claim": row.to_json(), "samples": [s.to_json() for s in evaluation.samples],
                   "provenance": session.provenance(subject),
                   "ledger_covers": ledger.covers(subject.identity, settings),
                   "work": cost.work.as_dict() if cost.work else None}
        request.node.user_properties.append(("harness", json.dumps(payload, default=str)))
        label = f"{row.claim}[{row.protocol}]"
        if outcome.kind == "xfail":
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
