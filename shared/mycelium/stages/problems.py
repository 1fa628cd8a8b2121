"""A run's current problems: the shards the ingest commit lists (never a listing of ``problems/``).

A re-shard (another ``--limit``) leaves no stale shard behind to be read: readers go by the commit, and
check every shard against the SHA-256 it committed, so an interrupted re-ingest is an error, never a
silently different problem set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..core.errors import IntegrityError, RunNotFoundError
from ..core.keys import RUN_ITEM, RunKeys
from ..core.lineage import Commit, read_commit
from ..core.store import Store, jsonl, sha256
from ..records.problems import Problem


def ingest_commit(store: Store, keys: RunKeys) -> Commit:
    commit = read_commit(store, keys, "ingest", RUN_ITEM)
    if commit is None:
        raise RunNotFoundError(f"run {keys.run!r} in {store.url} has no ingested problems: "
                               f"run `mycelium capture --data FILE --run {keys.run}` first")
    return commit


def shard_keys(store: Store, keys: RunKeys) -> list[str]:
    """The shards of the run's current ingest, in order."""
    return list(ingest_commit(store, keys).detail["shards"])


def read_problems(store: Store, keys: RunKeys, shards: list[str] | None = None) -> Iterator[Problem]:
    """The problems of ``shards`` (default: all of the run's), in shard order, each shard checked."""
    commit = ingest_commit(store, keys)
    for key in commit.detail["shards"] if shards is None else shards:
        data = store.get(key)
        if commit.outputs.get(key) != sha256(data):
            raise IntegrityError(keys.run, f"{key} is not the shard ingest committed (an interrupted re-ingest? "
                                           "run the same capture command again)")
        for line in jsonl(data):
            yield Problem.model_validate(json.loads(line))


def problem_ids(store: Store, keys: RunKeys) -> list[str]:
    return [p.id for p in read_problems(store, keys)]
