"""Stage 1, ingest: dataset file -> ``problems/part-*.jsonl`` (sharded, stable ids).

Bad rows are recorded under ``failures/ingest/`` with file, line and reason and
counted in the summary; the good rows go on.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import Problem, StageSummary
from .config import IngestConfig
from .datasets import read_dataset
from .errors import BadRowError, MyceliumError
from .runs import RunKeys, load_summary, record_failure, save_summary
from .store import Store

if TYPE_CHECKING:
    from .manifest import RunManifest

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


def ingest_run(store: Store, keys: RunKeys) -> tuple[StageSummary, list[str], "RunManifest"]:
    """Ingest a submitted run (the cloud path): its manifest names the uploaded dataset and the config.

    No teacher is loaded here, so over-long problems are not rejected at ingest: capture records
    each of them as a failure naming the problem id. Re-running rewrites the same shards.
    """
    from .manifest import load_manifest, sha256_bytes

    manifest = load_manifest(store, keys)
    key = keys(manifest.data)
    if not store.exists(key):
        raise MyceliumError(f"{store.url}/{key}: the manifest names this dataset, but it was not uploaded")
    data = store.get(key)
    if sha256_bytes(data) != manifest.data_sha256:
        raise MyceliumError(f"{store.url}/{key}: sha256 differs from the manifest's data_sha256 (partial upload?)")
    summary = load_summary(store, keys)
    stage = summary.stages["ingest"] = StageSummary()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(manifest.data).name  # the file name stays in bad-row messages
        path.write_bytes(data)
        shard_keys = ingest(path, store, keys, manifest.ingest, stage)
    save_summary(store, keys, summary)
    if not shard_keys:
        raise MyceliumError(f"{store.url}/{key}: no usable problems (see {keys('failures', 'ingest')}/)")
    return stage, shard_keys, manifest


def read_shard(store: Store, key: str) -> Iterator[Problem]:
    for line in store.get(key).decode().splitlines():
        if line.strip():
            yield Problem.model_validate(json.loads(line))
