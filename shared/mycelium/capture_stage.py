"""The capture stage as a streaming run: ingest, calibrate, capture each problem.

Each chunk goes to the store as soon as it is computed (trace, chunk, then the
manifest as commit marker), so memory stays flat however many problems a run
has; a rerun skips problems whose manifest exists; a problem that fails is
recorded under ``failures/capture/`` and the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import chunk as chunk_format
from .artifacts import ChunkManifest, Problem, RunSummary, StageSummary
from .capture import Calibration, HeadSet, calibrate, capture_problem, resolve_hidden_layer
from .config import CaptureConfig, IngestConfig
from .errors import ConfigError, MyceliumError
from .ingest import ingest, read_shard
from .runs import RunKeys, load_summary, record_failure, save_summary
from .store import Store
from .teacher import Teacher, load_teacher
from .errors import TeacherError

log = logging.getLogger(__name__)


@dataclass
class CaptureResult:
    summary: RunSummary
    shard_keys: list[str]
    calibration: Calibration


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _config_guard(store: Store, keys: RunKeys, cfg: CaptureConfig, teacher: Teacher, data: str, data_sha256: str,
                  ingest_cfg: IngestConfig) -> str:
    """Pin the run to one capture config, teacher and input file: anything else would mix chunks."""
    record = {"config_hash": cfg.hash(), "model_id": teacher.model_id, "data": data,
              "data_sha256": data_sha256, "dataset_format": ingest_cfg.dataset_format,
              "shard_size": ingest_cfg.shard_size, "config": cfg.model_dump(mode="json", exclude={"device", "progress"})}
    key = keys("capture", "config.json")
    if store.exists(key):
        old = store.get_json(key)
        pinned = ("config_hash", "model_id", "data_sha256", "dataset_format", "shard_size")
        diff = [f"{k}: {old.get(k)} -> {record[k]}" for k in pinned if old.get(k) != record[k]]
        if diff:
            raise ConfigError(f"run {keys.run!r} was captured differently ({'; '.join(diff)}). Use a new --run name.")
    else:
        store.put_json(key, record)
    return record["config_hash"]


def _calibration(store: Store, keys: RunKeys, teacher: Teacher, cfg: CaptureConfig, problems: list[Problem],
                 parts: tuple[str, str]) -> Calibration:
    key = keys("capture", "calibration.json")
    if store.exists(key):
        return Calibration.from_json(store.get_json(key))
    if cfg.computing_heads is not None:
        cal = Calibration(problem_ids=[], scores=[], computing_heads=[tuple(p) for p in cfg.computing_heads],
                          method="given in the config (computing_heads)")
    elif cfg.n_computing_heads == 0:
        cal = Calibration(problem_ids=[], scores=[], computing_heads=[], method="none (n_computing_heads=0)")
    else:
        cal = calibrate(teacher, problems[: cfg.calibration_problems], cfg, parts)
    bad = [(l, h) for l, h in cal.computing_heads if l >= teacher.n_layers or h >= teacher.n_heads]
    if bad:
        raise ConfigError(f"computing_heads {bad} out of range for {teacher.n_layers} layers x {teacher.n_heads} heads")
    log.info("computing heads: %s (%s)", cal.computing_heads, cal.method)
    store.put_json(key, cal.to_json())
    return cal


def problem_token_budget(teacher: Teacher, cfg: CaptureConfig) -> int:
    """Tokens a problem may have: the context less the template and, when generating, the CoT budget."""
    prefix, suffix = teacher.prompt_parts()
    template = len(teacher.tokenizer(prefix + suffix, add_special_tokens=False)["input_ids"])
    cot = cfg.max_new_tokens if cfg.cot == "generate" else 0
    budget = teacher.context_len - template - cot
    if budget < 1:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for the problem in a "
                          f"{teacher.context_len}-token context")
    return budget


def capture_problems(problems: Iterable[Problem], total: int | None, store: Store, keys: RunKeys,
                     teacher: Teacher, cfg: CaptureConfig, head_set: HeadSet, summary: StageSummary,
                     generated: dict | None = None) -> None:
    """Capture each problem and write it at once; skip done ones; record failures.

    ``generated``: problem id -> a CoT made beforehand (vLLM; see ``mycelium.generation``).
    """
    parts = teacher.prompt_parts()
    config_hash = cfg.hash()
    bar = tqdm(problems, total=total, unit="problem", desc="capture", disable=not cfg.progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for problem in bar:
        summary.n_in += 1
        if store.exists(keys.manifest(problem.id)):
            summary.skip("already captured")
            continue
        try:
            trace, chunk = capture_problem(teacher, problem, cfg, head_set, parts, config_hash,
                                           (generated or {}).get(problem.id))
            data = chunk_format.encode_chunk(chunk)
        except (TeacherError, ConfigError):
            raise  # the teacher or config is wrong for every problem: stop, do not record N failures
        except MyceliumError as e:
            summary.failed += 1
            record_failure(store, keys, "capture", problem.id, str(e), e)
            continue
        except Exception as e:  # noqa: BLE001 - one bad problem must not stop a run
            summary.failed += 1
            log.exception("capture of %s failed", problem.id)
            record_failure(store, keys, "capture", problem.id, f"{type(e).__name__}: {e}", e)
            continue
        store.put_json(keys.trace(problem.id), trace.model_dump(mode="json"))
        store.put(keys.chunk(problem.id), data)
        manifest = ChunkManifest(
            format_version=chunk_format.FORMAT_VERSION, problem_id=problem.id, chunk_key=keys.chunk(problem.id),
            trace_key=keys.trace(problem.id), bytes=len(data), sha256=chunk_format.sha256(data),
            model_id=teacher.model_id, config_hash=config_hash, n_layers=teacher.n_layers, n_heads=teacher.n_heads,
            hidden_size=teacher.hidden_size, hidden_layer=chunk.meta["hidden_layer"], prompt_len=trace.prompt_len,
            t_gen=trace.t_gen, n_problem_tokens=len(trace.problem_offsets),
            head_set=[tuple(int(x) for x in p) for p in chunk.head_set],
            arrays={n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in chunk.arrays().items()},
        )
        store.put_json(keys.manifest(problem.id), manifest.model_dump(mode="json"))
        store.delete(keys.failure("capture", problem.id))  # an earlier failure of this problem is history now
        summary.n_out += 1
        summary.count("chunk_bytes", len(data))
        summary.count("cot_tokens", trace.t_gen)
        summary.count("problem_tokens", len(trace.problem_offsets))
        summary.count("truncated", int(trace.truncated))
        summary.count("correct", int(trace.correct is True))
        summary.count("graded", int(trace.correct is not None))
        bar.set_postfix(failed=summary.failed, refresh=False)
    summary.seconds += time.perf_counter() - t0


def first_problems(store: Store, shard_keys: list[str], n: int) -> list[Problem]:
    """The first ``n`` problems of a run, in shard order (the calibration set)."""
    out: list[Problem] = []
    for key in shard_keys:
        for p in read_shard(store, key):
            if len(out) >= n:
                return out
            out.append(p)
    return out


def prepare_capture(store: Store, keys: RunKeys, teacher: Teacher, cfg: CaptureConfig, ingest_cfg: IngestConfig,
                    data: str, data_sha256: str, shard_keys: list[str]) -> Calibration:
    """Before any problem is captured: pin the run's config and find its computing heads (once per run)."""
    resolve_hidden_layer(cfg, teacher.n_layers)  # a bad layer fails here, not once per problem
    _config_guard(store, keys, cfg, teacher, data, data_sha256, ingest_cfg)
    first = first_problems(store, shard_keys, cfg.calibration_problems)
    if not first:
        raise MyceliumError(f"{data}: no usable problems (see {keys('failures', 'ingest')}/)")
    return _calibration(store, keys, teacher, cfg, first, teacher.prompt_parts())


def run_capture(data: str | Path, run: str, store: Store, cfg: CaptureConfig, ingest_cfg: IngestConfig,
                teacher: Teacher | None = None) -> CaptureResult:
    """``mycelium capture``: ingest ``data`` into run ``run`` and capture every problem."""
    keys = RunKeys(run)
    summary = load_summary(store, keys)
    if not Path(data).is_file():
        raise MyceliumError(f"--data {data}: no such file")
    teacher = teacher or load_teacher(cfg.teacher, cfg.device, cfg.dtype)
    resolve_hidden_layer(cfg, teacher.n_layers)
    budget = cfg.max_problem_tokens or problem_token_budget(teacher, cfg)
    counter = lambda text: len(teacher.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    summary.stages["ingest"] = StageSummary()
    summary.stages["capture"] = StageSummary()
    try:
        sha = file_sha256(data)
        _config_guard(store, keys, cfg, teacher, str(data), sha, ingest_cfg)  # before ingest writes anything
        shard_keys = ingest(data, store, keys, ingest_cfg, summary.stages["ingest"], counter, budget)
        calibration = prepare_capture(store, keys, teacher, cfg, ingest_cfg, str(data), sha, shard_keys)
        head_set = HeadSet(teacher.n_layers, tuple(calibration.computing_heads))
        problems = (p for key in shard_keys for p in read_shard(store, key))
        capture_problems(problems, summary.stages["ingest"].n_out, store, keys, teacher, cfg, head_set,
                         summary.stages["capture"])
    finally:
        save_summary(store, keys, summary)
    return CaptureResult(summary=summary, shard_keys=shard_keys, calibration=calibration)
