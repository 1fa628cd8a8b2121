"""A run's current problems: the shards the ingest commit lists (never a listing of ``problems/``).

A re-shard (another ``--limit``) leaves no stale shard behind to be read: readers go by the commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..core.errors import RunNotFoundError
from ..core.keys import RUN_ITEM, RunKeys
from ..core.lineage import read_commit
from ..core.store import Store
from ..records.problems import Problem


def shard_keys(store: Store, keys: RunKeys) -> list[str]:
    """The shards of the run's current ingest, in order."""
    commit = read_commit(store, keys, "ingest", RUN_ITEM)
    if commit is None:
        raise RunNotFoundError(f"run {keys.run!r} in {store.url} has no ingested problems: "
                               f"run `mycelium capture --data FILE --run {keys.run}` first")
    return list(commit.detail["shards"])


def read_shard(store: Store, key: str) -> Iterator[Problem]:
    for line in store.get(key).decode().splitlines():
        if line.strip():
            yield Problem.model_validate(json.loads(line))


def read_problems(store: Store, keys: RunKeys, shards: list[str] | None = None) -> Iterator[Problem]:
    """The problems of ``shards`` (default: all of the run's), in shard order."""
    for key in shard_keys(store, keys) if shards is None else shards:
        yield from read_shard(store, key)


def problem_ids(store: Store, keys: RunKeys) -> list[str]:
    return [p.id for p in read_problems(store, keys)]
