"""The local runner: a stage's items in this process, or in a process pool for the ``parallel`` stages.

:func:`run_stage` begins the stage (nothing is written for a run that does not exist), runs every item
through :func:`mycelium.stages.base.run_one`, shows a progress bar with counts and rates, lets the stage
write its report, and saves the stage's line of the run summary whatever happens.

The pool keeps at most two items per worker in flight. A worker that dies (the OOM killer, a segfault)
breaks the pool; the items in flight then are run again one at a time, each in a fresh worker, so the
one that kills its worker again gets a ledger entry and the others their results (one whose result was
lost with the pool is found committed, and counted as already done). The stage goes on.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from ..core.errors import MyceliumError
from ..core.store import open_store
from ..core.summary import StageSummary, save_stage
from .base import FATAL, ItemResult, Stage, run_one, tally


class StageFailed(MyceliumError):
    """A reduce stage failed: its one item is in the ledger with the reason."""


def run_stage(stage: Stage, *, items: Iterable[str] | None = None, workers: int | None = None,
              progress: bool = True, save_summary: bool = True) -> StageSummary:
    """Run ``stage`` over its items (or ``items``); the run summary's line for the stage is saved at the end.

    ``save_summary=False`` where several processes run parts of one stage at once (a Batch array job):
    each reports its own part, and the run's line is tallied from the store afterwards.
    """
    record_key = stage.keys.stage_record(stage.name)
    previous = stage.store.get(record_key) if stage.store.exists(record_key) else None
    stage.begin()  # before anything is written: a missing run or upstream stage stops here
    if stage.after is not None:
        stage.problems  # noqa: B018 - shards that are not what ingest committed stop the stage, not each item
    stage.ready()
    summary = StageSummary()
    failure: str | None = None
    t0 = time.perf_counter()
    try:
        todo = list(stage.items() if items is None else items)
        n = len(todo)
        workers = min(workers or os.cpu_count() or 1, max(1, n)) if stage.parallel else 1
        unit = "problem" if stage.kind == "map" else "run"
        desc = f"{stage.name}" + (f" ({workers} workers)" if workers > 1 else "")
        bar = tqdm(total=n, unit=unit, desc=desc, disable=not progress, dynamic_ncols=True)
        results = _pooled(stage, todo, workers) if workers > 1 else (run_one(stage, item) for item in todo)
        for result in results:
            tally(summary, result)
            failure = result.reason if result.status == "failed" else failure
            bar.update(1)
            bar.set_postfix(done=summary.n_out, failed=summary.failed, refresh=False)
        bar.close()
        if workers > 1:
            summary.count("workers", workers)
        stage.finish(summary)
    except FATAL:
        # A config or teacher that cannot work for any item: the run keeps the config it had, so the
        # outputs of that config stay current (nothing this call wrote is read as current).
        if previous is None:
            stage.store.delete(record_key)
        else:
            stage.store.put(record_key, previous)
        raise
    finally:
        summary.seconds = time.perf_counter() - t0
        if save_summary:
            save_stage(stage.store, stage.keys, stage.name, summary)
    if stage.kind == "reduce" and failure is not None and not summary.n_out:
        raise StageFailed(f"{stage.name} failed: {failure} "
                          f"(ledger: {stage.store.url}/{stage.keys.failure(stage.name, 'run')})")
    return summary


# ---- the pool --------------------------------------------------------------------------------------

_STAGE: Stage | None = None


def _spec(stage: Stage) -> tuple[str, str, str, str, str]:
    cls = type(stage)
    return cls.__module__, cls.__qualname__, stage.store.url, stage.keys.run, stage.config.model_dump_json()


def _init(module: str, qualname: str, store_url: str, run: str, config_json: str) -> None:
    global _STAGE
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    _STAGE = cls(open_store(store_url), run, cls.config_type.model_validate_json(config_json))


def _work(item: str) -> ItemResult:
    return run_one(_STAGE, item)


def _pool(stage: Stage, workers: int) -> ProcessPoolExecutor:
    # spawn: workers never inherit a parent's torch threads or open clients
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init,
                               initargs=_spec(stage))


def _pooled(stage: Stage, items: list[str], workers: int) -> Iterator[ItemResult]:
    pending = deque(items)
    while pending:
        suspects: list[str] = []
        before = len(pending)
        with _pool(stage, workers) as pool:
            inflight: dict = {}
            try:
                while pending or inflight:
                    while pending and len(inflight) < 2 * workers:
                        item = pending[0]
                        inflight[pool.submit(_work, item)] = item  # BrokenProcessPool: the item stays pending
                        pending.popleft()
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        result = fut.result()  # BrokenProcessPool if any worker died
                        del inflight[fut]
                        yield result
            except BrokenProcessPool:
                for fut, item in inflight.items():  # finished before the break: their results stand
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield fut.result()
                    else:
                        suspects.append(item)
        if len(pending) == before and not suspects:
            raise MyceliumError(f"{stage.name}: the worker pool broke before it ran any item")
        for item in suspects:
            yield _alone(stage, item)


def _alone(stage: Stage, item: str) -> ItemResult:
    """Run one item that was in flight when a worker died, in a worker of its own."""
    with _pool(stage, 1) as pool:
        try:
            return pool.submit(_work, item).result()
        except BrokenProcessPool:
            return stage.fail(item, "the worker process died while processing this item "
                                    "(killed by the OOM killer or a signal?)")
