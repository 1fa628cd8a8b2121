"""The one way a stage runs: items, is-done, one item, the commit marker, the ledger, lineage, counts.

A stage subclasses :class:`Stage` and says three things: which items it has (``items``), how one item
becomes outputs (``process``: read inputs, compute, return the bytes to write), and which stage it reads
(``after``). Everything else is here, the same for the local runner (``mycelium.stages.runner``), the
Lambda handlers and the Batch workers:

- **begin**: the upstream stage must have run (else RunNotFoundError, before anything is written); the
  stage's record ``stages/<stage>.json`` is written with its config (a *pinned* stage refuses another
  config: its outputs are too costly to mix or redo).
- **one item** (:func:`run_one`): skipped when its commit exists with the current lineage; else processed,
  its outputs written, then its commit (last), then its ledger entry cleared. A failure writes a ledger
  entry and the stage goes on; a stale or foreign input is skipped with the reason.
- **readers** (:meth:`Stage.upstream_commit`, :func:`committed`) take only committed upstream items whose
  lineage matches the upstream stage's current one, of the run's current problems, and verify every
  byte they read against the commit's SHA-256.

Map stages have one item per problem; a reduce has the one item ``run`` and redoes it each time. What a
reduce read (every key and SHA-256 through :meth:`Stage.read_verified`) is part of its lineage: its record
is updated with that digest after its commit, so outputs made from its earlier output become stale.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import ValidationError

from ..core.config import StageConfig
from ..core.errors import ConfigError, MyceliumError, RunNotFoundError, StoreError, TeacherError
from ..core.keys import RUN_ITEM, RunKeys, item_of_commit
from ..core.ledger import clear_failure, failed_items, record_failure
from ..core.lineage import (Commit, Lineage, StageRecord, current_lineage, inputs_digest, mismatch, read_commit,
                            read_record, verified_bytes, with_inputs)
from ..core.store import Store, sha256
from ..core.summary import StageSummary
from .problems import problem_ids

log = logging.getLogger(__name__)

#: Errors that are wrong for every item (a bad config, a broken teacher, a missing run): they stop the stage.
FATAL = (ConfigError, TeacherError, RunNotFoundError)
ALREADY_DONE = "already done"


class SkipItem(Exception):
    """The stage declines an item (a stale or uncommitted input, a problem outside the run): counted, not failed."""


class ItemFailed(MyceliumError):
    """Raised by :func:`run_item` so an orchestrator (the Distributed Map) counts the item as failed."""


@dataclass
class Outputs:
    """What processing one item produced: written in order, then the commit."""

    files: dict[str, bytes]
    counters: dict[str, int | float] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)
    summary: StageSummary | None = None  # a reduce's own counts of what it read
    stale: list[str] = field(default_factory=list)  # keys to delete once the commit is written


@dataclass
class ItemResult:
    item: str
    status: Literal["done", "skipped", "failed"]
    reason: str | None = None
    counters: dict[str, int | float] = field(default_factory=dict)
    summary: StageSummary | None = None

    def to_json(self) -> dict:
        return {"item": self.item, "status": self.status, "reason": self.reason, **self.counters}


class Stage(ABC):
    name: ClassVar[str]
    #: The stage this one comes after: its lineage extends that stage's current lineage.
    after: ClassVar[str | None] = None
    #: The stage whose per-item commits are this one's inputs, when not ``after`` (label reads analyze's items
    #: and comes after discover, whose templates it also reads).
    items_from: ClassVar[str | None] = None
    kind: ClassVar[Literal["map", "reduce"]] = "map"
    #: A pinned stage refuses a config with another lineage hash ("use a new --run name").
    pinned: ClassVar[bool] = False
    #: Items may run in a process pool (pure CPU work, no model in memory).
    parallel: ClassVar[bool] = False
    config_type: ClassVar[type[StageConfig]]

    def __init__(self, store: Store, run: str, config: StageConfig):
        if not isinstance(config, self.config_type):
            raise TypeError(f"{self.name} takes a {self.config_type.__name__}, not {type(config).__name__}")
        self.store, self.keys, self.config = store, RunKeys(run), config
        self.read: dict[str, str] = {}  # key -> SHA-256 of every committed output this stage read

    @classmethod
    def current(cls, store: Store, run: str, **kwargs) -> "Stage":
        """The stage with the run's current config (its record: written by ``begin``, or at a cloud run's start)."""
        record = read_record(store, RunKeys(run), cls.name)
        return cls(store, run, cls.config_type.model_validate(record.config), **kwargs)

    # ---- lineage
    def config_hash(self) -> str:
        """The hash this stage adds to lineages: its config's, unless the stage pins more (ingest: the data)."""
        return self.config.hash()

    def record_detail(self) -> dict:
        return {}

    @cached_property
    def upstream_lineage(self) -> Lineage:
        """The current lineage of the stage this one reads (RunNotFoundError when it has not run)."""
        return current_lineage(self.store, self.keys, self.after) if self.after else {}

    @property
    def source(self) -> str | None:
        """The stage whose per-item commits :meth:`upstream_commit` reads."""
        return self.items_from or self.after

    @cached_property
    def source_lineage(self) -> Lineage:
        return self.upstream_lineage if self.source == self.after else current_lineage(self.store, self.keys, self.source)

    @cached_property
    def lineage(self) -> Lineage:
        """What this stage's outputs are made with: the upstream's current lineage and this config."""
        return {**self.upstream_lineage, self.name: self.config_hash()}

    @cached_property
    def problems(self) -> frozenset[str]:
        """The run's current problems (the ingest commit's shards): items outside it are skipped."""
        return frozenset(problem_ids(self.store, self.keys))

    def begin(self) -> StageRecord:
        """Check the upstream stage has run; write this stage's record (a pinned stage refuses another config)."""
        self.lineage  # noqa: B018 - the upstream stage must have run: else RunNotFoundError, nothing written
        record = StageRecord(stage=self.name, after=self.after, config=self.config.model_dump(mode="json"),
                             config_hash=self.config_hash(), detail=self.record_detail())
        key = self.keys.stage_record(self.name)
        if self.store.exists(key):
            old = read_record(self.store, self.keys, self.name)
            if self.pinned and old.config_hash != record.config_hash:
                raise ConfigError(f"run {self.keys.run!r}: its {self.name} stage is pinned to another config "
                                  f"({self._pin_diff(old, record)}). Use a new --run name.")
            if (old.after, old.config, old.config_hash, old.detail) == (record.after, record.config,
                                                                         record.config_hash, record.detail):
                return old
        self.store.put_json(key, record.model_dump(mode="json"))
        return record

    def _pin_diff(self, old: StageRecord, new: StageRecord) -> str:
        """What differs among the fields that make the lineage hash (runtime and selection fields left out)."""
        free = set(self.config._runtime_only) | set(getattr(self.config_type, "selection_fields", ()))
        a = {**{k: v for k, v in old.config.items() if k not in free}, **old.detail}
        b = {**{k: v for k, v in new.config.items() if k not in free}, **new.detail}
        diff = [f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return "; ".join(diff) or f"config hash {old.config_hash} -> {new.config_hash}"

    # ---- items
    @abstractmethod
    def items(self) -> Iterable[str]:
        """The items to consider (a map: upstream's committed items; a reduce: ``[RUN_ITEM]``)."""

    @abstractmethod
    def process(self, item: str) -> Outputs:
        """Read the item's inputs, compute, return the outputs. Raise SkipItem to decline it."""

    def is_done(self, item: str) -> bool:
        """Committed with the current lineage (a corrupt commit raises StoreError, naming its key)."""
        if self.kind == "reduce":
            return False  # a reduce reads every upstream item, and their set may have grown: redo it
        commit = read_commit(self.store, self.keys, self.name, item)
        return commit is not None and commit.lineage == self.lineage

    def upstream_commit(self, item: str) -> Commit:
        """The source stage's commit of ``item``, if it is current and of this run; else SkipItem says why."""
        if item != RUN_ITEM and item not in self.problems:
            raise SkipItem("not among the run's problems (ingest)")
        commit = read_commit(self.store, self.keys, self.source, item)
        if commit is None:
            raise SkipItem(f"not committed by {self.source}")
        why = mismatch(self.source_lineage, commit.lineage)
        if why:
            raise SkipItem(f"stale {self.source} output ({why})")
        return commit

    def read_verified(self, commit: Commit, key: str) -> bytes:
        """The bytes at ``key``, checked against the SHA-256 the commit recorded for them."""
        data = verified_bytes(self.store, commit, key)
        self.read[key] = commit.outputs[key]
        return data

    def ready(self) -> None:
        """After ``begin``, before any item: check what every item needs (a stage-wide input), or raise."""

    def finish(self, summary: StageSummary) -> None:
        """After every item (the local runner): a stage's run-level report, if it has one."""

    # ---- commit
    def commit(self, item: str, out: Outputs) -> Commit:
        """Outputs, then the item's ledger entry cleared, then the commit marker (last: a crash anywhere
        before it leaves an item that is simply redone, never a committed item with a stale entry)."""
        for key, data in out.files.items():
            self.store.put(key, data)
        clear_failure(self.store, self.keys, self.name, item)
        commit = Commit(stage=self.name, item=item, lineage=self.lineage,
                        outputs={k: sha256(v) for k, v in out.files.items()}, counters=out.counters, detail=out.detail)
        self.store.put_json(self.keys.commit(self.name, item), commit.model_dump(mode="json"))
        for key in out.stale:
            self.store.delete(key)
        return commit

    def fail(self, item: str, reason: str, exc: BaseException | None = None) -> ItemResult:
        record_failure(self.store, self.keys, self.name, item, reason, exc)
        return ItemResult(item, "failed", reason=reason)


class ReduceStage(Stage):
    """A stage that runs once per run over every upstream item: its one item is ``run``, redone each time."""

    kind = "reduce"

    def items(self) -> list[str]:
        return [RUN_ITEM]

    @property
    def lineage(self) -> Lineage:
        """The upstream's current lineage and this config, with the digest of what this stage has read so far."""
        # A reduce that read no committed output (ingest reads only its pinned data file) has no inputs to name.
        inputs = inputs_digest(self.read) if self.read else None
        return {**self.upstream_lineage, self.name: with_inputs(self.config_hash(), inputs)}

    def commit(self, item: str, out: Outputs) -> Commit:
        """The commit, then the record's ``inputs``: from then on, the current lineage names this output."""
        commit = super().commit(item, out)
        record = read_record(self.store, self.keys, self.name)
        inputs = commit.lineage[self.name].partition("+")[2] or None
        if record.config_hash == self.config_hash() and record.inputs != inputs:
            self.store.put_json(self.keys.stage_record(self.name), record.model_copy(update={"inputs": inputs})
                                .model_dump(mode="json"))
        return commit


def run_one(stage: Stage, item: str) -> ItemResult:
    """One item, guarded: done / skipped (with why) / failed (ledger entry). Fatal errors propagate."""
    try:
        if stage.is_done(item):
            # an entry from a failure under another config is history once this config's commit stands
            clear_failure(stage.store, stage.keys, stage.name, item)
            return ItemResult(item, "skipped", reason=ALREADY_DONE)
        if stage.kind == "reduce":  # a reduce redoes everything: its earlier entries (bad input lines) go
            for key in failed_items(stage.store, stage.keys, stage.name):
                stage.store.delete(key)
        out = stage.process(item)
        stage.commit(item, out)
        return ItemResult(item, "done", counters=out.counters, summary=out.summary)
    except SkipItem as s:
        return ItemResult(item, "skipped", reason=str(s))
    except FATAL:
        raise
    except Exception as e:  # noqa: BLE001 - one bad item must not stop the stage: it goes to the ledger
        log.debug("%s %s failed", stage.name, item, exc_info=True)
        return stage.fail(item, f"{type(e).__name__}: {e}", e)


def run_item(stage: Stage, item: str) -> dict:
    """:func:`run_one` for an orchestrator: a small summary back, ItemFailed (after the ledger entry) on failure."""
    result = run_one(stage, item)
    if result.status == "failed":
        raise ItemFailed(f"{stage.name} {item}: {result.reason}")
    return result.to_json()


def tally(summary: StageSummary, result: ItemResult) -> None:
    """Count one item's result in the stage summary (a reduce brings its own counts of what it read)."""
    if result.summary is not None:
        summary.merge(result.summary)
    else:
        summary.n_in += 1
        if result.status == "done":
            summary.n_out += 1
    if result.status == "skipped":
        summary.skip(result.reason or "skipped")
    elif result.status == "failed" and result.summary is None:
        summary.failed += 1
    for name, v in result.counters.items():
        summary.count(name, v)


def current_commit(stage: Stage, of: str, key: str, lineage: Lineage) -> tuple[Commit | None, str | None]:
    """(the commit at ``key``, None) if it is ``of``'s current commit of one of the run's problems,
    else (None, why not). Reading writes nothing: a corrupt commit is the ledger entry of the stage that
    made it when that stage next runs (its ``is_done`` reads the same marker)."""
    item = item_of_commit(key)
    if item != RUN_ITEM and item not in stage.problems:
        return None, f"{of} output of a problem outside the run's problems"
    try:
        commit = Commit.model_validate(stage.store.get_json(key))
    except (ValidationError, StoreError):
        return None, f"corrupt {of} commit marker"
    if commit.item != item or commit.stage != of:
        return None, f"corrupt {of} commit marker"
    why = mismatch(lineage, commit.lineage)
    return (None, f"stale {of} output ({why})") if why else (commit, None)


def committed(stage: Stage, of: str, lineage: Lineage, summary: StageSummary,
              keys: RunKeys | None = None) -> Iterator[Commit]:
    """``of``'s current commits (made with ``lineage``, of the run's problems); the others counted as skipped.
    ``keys``: another run's (an improvement round's mop-up run), its problems a subset of this run's."""
    for key in stage.store.list((keys or stage.keys).commits(of)):
        commit, why = current_commit(stage, of, key, lineage)
        if why:
            summary.skip(why)
        else:
            yield commit


def tally_from_store(stage: Stage) -> StageSummary:
    """A map stage's counts as the store holds them, one status per item of the run's problems: out (a
    current commit), failed (a ledger entry), or skipped with the reason (a stale or corrupt commit).

    Used where no single process saw every item (a Distributed Map, an array job); items not yet tried
    count nowhere.
    """
    summary = StageSummary()
    ledger = {item_of_commit(k) for k in failed_items(stage.store, stage.keys, stage.name)} & stage.problems
    for key in stage.store.list(stage.keys.commits(stage.name)):
        if item_of_commit(key) in ledger:
            continue
        commit, why = current_commit(stage, stage.name, key, stage.lineage)
        if why:
            summary.skip(why)
            continue
        summary.n_out += 1
        for name, v in commit.counters.items():
            summary.count(name, v)
    summary.failed = len(ledger)
    summary.n_in = summary.n_out + summary.failed + sum(summary.skipped.values())
    return summary
