"""Stage 1, ingest: dataset file -> ``problems/part-*.jsonl`` (sharded, stable ids).

Bad rows are recorded under ``failures/ingest/`` with file, line and reason and
counted in the summary; the good rows go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .artifacts import Problem, StageSummary
from .config import IngestConfig
from .datasets import read_dataset
from .errors import BadRowError
from .runs import RunKeys, record_failure
from .store import Store

log = logging.getLogger(__name__)


def ingest(
    data: str | Path,
    store: Store,
    keys: RunKeys,
    cfg: IngestConfig,
    summary: StageSummary,
    token_counter: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> list[str]:
    """Write the problems of ``data`` as shards; return the shard keys."""
    t0 = time.perf_counter()
    seen: set[str] = set()
    shard: list[str] = []
    shard_keys: list[str] = []

    def flush():
        if shard:
            key = keys.shard(len(shard_keys))
            store.put(key, ("\n".join(shard) + "\n").encode())
            shard_keys.append(key)
            shard.clear()

    rows = read_dataset(data, cfg.dataset_format, token_counter=token_counter, max_tokens=max_tokens)
    for item in rows:
        if cfg.limit is not None and summary.n_out >= cfg.limit:
            break
        summary.n_in += 1
        if isinstance(item, BadRowError):
            summary.failed += 1
            log.warning("bad row: %s", item)
            record_failure(store, keys, "ingest", f"{Path(item.file).name}-L{item.line}", str(item), None)
            continue
        if item.id in seen:
            summary.skip("duplicate problem")
            continue
        seen.add(item.id)
        shard.append(item.model_dump_json())
        summary.n_out += 1
        if len(shard) >= cfg.shard_size:
            flush()
    flush()
    summary.seconds = time.perf_counter() - t0
    return shard_keys


def read_shard(store: Store, key: str) -> Iterator[Problem]:
    for line in store.get(key).decode().splitlines():
        if line.strip():
            yield Problem.model_validate(json.loads(line))
