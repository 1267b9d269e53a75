"""What one pytest process shares: the options, the subject, the evaluators, the ledgers.

The plugin (:mod:`harness.plugin`) makes one :class:`HarnessSession` in ``pytest_configure``
and its fixtures and hooks ask it: the finding of a test's folder, the finding's bank,
pairs, ledger and settings, and the run's provenance. No hooks or fixtures here; like the
plugin, importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError

__all__ = ["HarnessSession"]


class HarnessSession:
    """What one pytest process shares: the options, the subject, the evaluator, the ledger."""

    def __init__(self, config: pytest.Config, options: Any) -> None:
        self.config = config
        #: The run's settings (:class:`harness.preflight.RunOptions`), read by the plugin.
        self.options = options
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
        self._growing: dict[Path | None, list[list[Any]]] = {}
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

    def add_cell(self, path: Path) -> None:
        """Count one claim cell collected from the test file at ``path`` (its finding's family)."""
        self.collected_cells += 1
        name = self.finding_for(path).name
        self.cells_by_finding[name] = self.cells_by_finding.get(name, 0) + 1

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
                self._runner = Runner(self.subject(), max_batch=self.options.max_batch,
                                      decoding=self.options.decoding)
            self._evaluators[finding.name] = Evaluator(self._runner, finding=finding,
                                                      seed_offset=self.options.seed_offset,
                                                      sequential=self.options.until_decided is not None)
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

    def pair_batches(self, finding: Any) -> Iterator[list[Any]]:
        """The pairs a claim cell is evaluated on, growing: the run's pairs, then (with
        ``--until-decided N``) batches of as many more, each spread over the groups of the pairs
        left, up to N. The order is fixed before any result is seen, as the sequential test
        requires; the caller stops taking batches once the cell is decided (see :func:`extends`).
        """
        from harness.prompts import default_pairs, growing, load_pairs

        first = self.pairs(finding)
        budget = self.options.until_decided
        if budget is None:
            yield first
            return
        bank = self.bank(finding)
        if bank not in self._growing:  # read and spread once per bank, not per claim
            self._growing[bank] = growing(load_pairs(bank) if bank else default_pairs(), first, budget)
        yield from self._growing[bank]

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
                **({"until_decided": o.until_decided} if o.until_decided is not None else {}),
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
            "decoding": o.decoding,
            "prompts": str(_shown_path(str(self.bank(finding))) if self.bank(finding) else "bundled toy bank"),
            "profile": o.profile, "settings": self.settings(finding), "family_size": self.finding_family(finding),
            "finding": (finding.name if finding else "generic"),
            "protocols": {name: {**dataclasses.asdict(self.protocol(name)),
                                 "metric": self.protocol(name).metric or (finding or GENERIC).metric_for(name)}
                          for name in PROTOCOLS},
            "metrics": [{"name": m.name, "floor": m.floor, "description": m.description, "bounds": m.bounds}
                        for m in (finding or GENERIC).metric_table().values()],
        }


def extends(row: Any) -> bool:
    """Does a sequential run add pairs to this cell? Only to an undecided cell whose verdict
    came from the sequential betting test: a minimal-KV-set cell (its set is searched on half of
    the pairs, so it would change as pairs come) and a cell on a t interval (looking again
    would inflate its error) are judged once, at the run's pairs."""
    from harness.bounded import SEQUENTIAL_METHOD

    return row.verdict == "inconclusive" and row.interval_method == SEQUENTIAL_METHOD


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
