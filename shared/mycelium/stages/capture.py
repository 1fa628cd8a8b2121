"""Stage 2, capture (a map over problems): teacher-forced passes -> ``chunks/<pid>.npz`` + ``traces/<pid>.json``.

Items run in this process (the teacher is loaded once, on the accelerator), ``batch_size`` problems per
forward pass; each item's chunk and trace are written, then its commit, before the next batch is read, so
memory stays flat however many problems a run has. The stage is pinned: a run has one capture config and teacher, and its
computing heads are found once (:meth:`CaptureStage.prepare`, ``capture/calibration.json``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..core.config import CaptureConfig, IngestConfig
from ..core.errors import ConfigError, MyceliumError
from ..core.keys import RunKeys
from ..core.lineage import read_record
from ..core.store import Store
from ..core.summary import RunSummary, load_summary
from ..records.capture import Calibration
from ..records.chunk import encode_chunk
from ..records.problems import Problem
from .base import Outputs, SkipItem, Stage
from .ingest import IngestStage
from .problems import read_problems, shard_keys
from .runner import run_stage

log = logging.getLogger(__name__)


class CaptureStage(Stage):
    name = "capture"
    after = "ingest"
    pinned = True
    config_type = CaptureConfig

    def __init__(self, store: Store, run: str, config: CaptureConfig, teacher=None, generated: dict | None = None):
        """``teacher``: an already loaded one (else the config's is loaded on first use);
        ``generated``: problem id -> a CoT made beforehand (vLLM; see ``mycelium.teacher.generation``)."""
        super().__init__(store, run, config)
        self._teacher, self.generated = teacher, generated or {}
        self.backend = "hf"  # how generated CoTs are made; the Batch worker sets "vllm" when it pre-generates
        self._problems: dict[str, Problem] = {}
        self._captured: dict[str, tuple | Exception] = {}  # problem id -> (trace, chunk) or its error, one batch

    @cached_property
    def teacher(self):
        if self._teacher is None:
            from ..teacher.model import load_teacher

            self._teacher = load_teacher(self.config.teacher, self.config.device, self.config.dtype)
        return self._teacher

    def items(self, shards: list[str] | None = None) -> list[str]:
        """The run's problems (or those of ``shards``), in shard order."""
        problems = list(read_problems(self.store, self.keys, shards))
        self._problems.update((p.id, p) for p in problems)
        self._order = [p.id for p in problems]
        return list(self._order)

    def _capture_ahead(self, pid: str) -> None:
        """``pid`` and, of the next ``4 * batch_size`` problems not yet captured, the ``batch_size - 1`` closest to
        it in length, in one teacher-forced pass.

        Their CoTs are generated first where the config asks for generated ones (``generate_batch`` at a
        time). The results wait in memory (a few batches at most) until run_one asks for each, so every problem
        is still written and committed on its own.
        """
        from ..teacher.capture import capture_problems
        from ..teacher.generation import generate_cots
        from ..teacher.tokens import prompt_tokens

        order = getattr(self, "_order", [pid])
        ahead = order[order.index(pid) + 1:] if pid in order else []
        size = self.config.batch_size or (8 if self.teacher.device.type == "cuda" else 1)
        # (with a batch of one, no look-ahead: no commit reads for problems this pass does not take)
        todo = [p for p in ahead[: 4 * size] if p not in self._captured and not self._done_quietly(p)] \
            if size > 1 else []
        # of the next problems, those closest in length to this one: padding to the longest costs N^2 per layer
        text = lambda p: len(self.problem(p).question) + len(self.problem(p).solution or "")  # noqa: E731
        batch = [pid] + sorted(todo, key=lambda p: abs(text(p) - text(pid)))[: size - 1]
        if self.config.cot == "generate":
            missing, parts = [p for p in batch if p not in self.generated], self.teacher.prompt_parts()
            for i in range(0, len(missing), self.config.generate_batch):
                some = missing[i:i + self.config.generate_batch]
                prompts = [prompt_tokens(self.teacher, self.problem(p).question, parts).prompt_ids for p in some]
                self.generated.update(zip(some, generate_cots(self.teacher, prompts, self.config.max_new_tokens),
                                          strict=True))
        results = capture_problems(self.teacher, [self.problem(p) for p in batch], self.config, self.head_set,
                                   self.teacher.prompt_parts(), self.config_hash(),
                                   {p: self.generated.pop(p) for p in batch if p in self.generated})
        self._captured.update(zip(batch, results, strict=True))

    def _done_quietly(self, pid: str) -> bool:
        try:
            return self.is_done(pid)
        except Exception:  # noqa: BLE001 - a corrupt commit: run_one will make it a ledger entry
            return False

    def prepare(self) -> Calibration:
        """Once per run, before any problem: pin the config (``begin``) and find the computing heads."""
        from ..teacher.calibration import calibrate
        from ..teacher.tap import resolve_hidden_layer

        self.begin()
        resolve_hidden_layer(self.config, self.teacher.n_layers)  # a bad layer fails here, not once per problem
        key = self.keys.calibration
        if self.store.exists(key):
            return Calibration.model_validate(self.store.get_json(key))
        cfg = self.config
        if cfg.computing_heads is not None:
            cal = Calibration(problem_ids=[], scores=[], computing_heads=list(cfg.computing_heads),
                              method="given in the config (computing_heads)")
        elif cfg.n_computing_heads == 0:
            cal = Calibration(problem_ids=[], scores=[], computing_heads=[], method="none (n_computing_heads=0)")
        else:
            first = list(read_problems(self.store, self.keys, shard_keys(self.store, self.keys)[:1]))
            cal = calibrate(self.teacher, first[: cfg.calibration_problems], cfg, self.teacher.prompt_parts())
        t = self.teacher
        bad = [(l, h) for l, h in cal.computing_heads if l >= t.n_layers or h >= t.n_heads]
        if bad:
            raise ConfigError(f"computing_heads {bad} out of range for {t.n_layers} layers x {t.n_heads} heads")
        cal = cal.model_copy(update={"dtype": str(t.model.dtype), "n_layers": t.n_layers, "n_heads": t.n_heads})
        log.info("computing heads: %s (%s)", cal.computing_heads, cal.method)
        self.store.put_json(key, cal.model_dump(mode="json"))
        return cal

    @cached_property
    def head_set(self):
        from ..teacher.tap import HeadSet

        key = self.keys.calibration
        if not self.store.exists(key):
            raise MyceliumError(f"run {self.keys.run!r} has no {key}: prepare the capture first")
        cal = Calibration.model_validate(self.store.get_json(key))
        loaded = str(self.teacher.model.dtype)
        if cal.dtype is not None and cal.dtype != loaded:
            raise ConfigError(f"run {self.keys.run!r} was pinned with the teacher in {cal.dtype}; this machine "
                              f"loads it in {loaded} (dtype 'auto' follows the device): set --dtype or use the "
                              f"same kind of device, or capture into a new run")
        return HeadSet(self.teacher.n_layers, tuple(tuple(h) for h in cal.computing_heads))

    def problem(self, pid: str) -> Problem:
        if not self._problems:
            self.items()
        if pid not in self._problems:
            raise SkipItem("not among the run's problems (ingest)")
        return self._problems[pid]

    def process(self, pid: str) -> Outputs:
        self.problem(pid)
        if pid not in self._captured:
            self._capture_ahead(pid)
        result = self._captured.pop(pid)
        if isinstance(result, Exception):
            raise result
        trace, chunk = result
        data = encode_chunk(chunk, self.config.chunk_format_version)
        k = self.keys
        return Outputs(
            files={k.trace(pid): trace.model_dump_json().encode(), k.chunk(pid): data},
            counters={"chunk_bytes": len(data), "cot_tokens": trace.t_gen, "problem_tokens": len(trace.problem_offsets),
                      "truncated": int(trace.truncated), "correct": int(trace.correct is True),
                      "graded": int(trace.correct is not None)},
            detail={"model_id": self.teacher.model_id, "t_gen": trace.t_gen, "n_problem_tokens": len(trace.problem_offsets),
                    "cot": "reference" if self.config.cot == "reference" else self.backend,
                    "arrays": {n: list(a.shape) for n, a in chunk.arrays().items()}},
        )


def problem_token_budget(teacher, cfg: CaptureConfig) -> int:
    """Tokens a problem may have: the context less the template and, when generating, the CoT budget."""
    prefix, suffix = teacher.prompt_parts()
    template = len(teacher.tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])
    cot = cfg.max_new_tokens if cfg.cot == "generate" else 0
    budget = teacher.context_len - template - cot
    if budget < 1:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for the problem in a "
                          f"{teacher.context_len}-token context")
    return budget


def keep_chunk_format(store: Store, run: str, cfg: CaptureConfig) -> CaptureConfig:
    """``cfg`` with the run's own chunk format unless one was asked for: a run captured in an older format
    goes on in it (same lineage, nothing recaptured); a new run takes the latest."""
    key = RunKeys(run).stage_record(CaptureStage.name)
    if "chunk_format_version" in cfg.model_fields_set or not store.exists(key):
        return cfg
    pinned = read_record(store, RunKeys(run), CaptureStage.name).config.get("chunk_format_version")
    return cfg.model_copy(update={"chunk_format_version": pinned}) if pinned in (1, 2) else cfg


@dataclass
class CaptureResult:
    summary: RunSummary
    calibration: Calibration


def run_capture(data: str | Path, run: str, store: Store, cfg: CaptureConfig, ingest_cfg: IngestConfig,
                teacher=None) -> CaptureResult:
    """``mycelium capture``: ingest ``data`` into run ``run``, then capture every problem of the run."""
    if not Path(data).is_file():
        raise MyceliumError(f"--data {data}: no such file")
    cfg = keep_chunk_format(store, run, cfg)
    capture = CaptureStage(store, run, cfg, teacher=teacher)
    t = capture.teacher
    from ..teacher.tap import resolve_hidden_layer

    resolve_hidden_layer(cfg, t.n_layers)  # before ingest writes anything
    counter = lambda text: len(t.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    ingest = IngestStage(store, run, ingest_cfg, data, token_counter=counter,
                         max_tokens=cfg.max_problem_tokens or problem_token_budget(t, cfg))
    if store.exists(capture.keys.stage_record(capture.name)):
        capture.begin()  # pinned: another capture config is refused before ingest writes anything
    run_stage(ingest, progress=False)
    # Ingest's commit may have changed its lineage (a run recorded before reduces named their inputs): capture
    # takes its lineage from ingest as it is now, not as it was before ingest ran.
    capture = CaptureStage(store, run, cfg, teacher=t)
    calibration = capture.prepare()
    run_stage(capture, progress=cfg.progress)
    return CaptureResult(summary=load_summary(store, capture.keys), calibration=calibration)

