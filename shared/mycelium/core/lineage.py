"""Lineage: which configs made an output, so readers take only outputs of the run's current configs.

A stage's *lineage* maps every stage it depends on, itself included, to that stage's config hash:
``{"ingest": "…", "capture": "…", "analyze": "…"}``.

- ``StageRecord`` (``stages/<stage>.json``): the stage's current config for the run and the stage it reads,
  written when the stage begins (on AWS: from the run manifest, when the run starts). A stage's *current*
  lineage is read along these records (:func:`current_lineage`), so a new analyze config makes every
  aggregate and discover output made before it stale at once.
- ``Commit`` (``commits/<stage>/<item>.json``): written after an item's outputs, last. It records the
  lineage the item was made with and the SHA-256 of every output, so a reader can check both.
- A reduce's outputs depend on *which* upstream outputs it read, not only on configs: run discover again
  after more problems were analysed and the templates change under the same configs. So a reduce adds to
  its config hash a digest of every (key, SHA-256) it read (``"<config>+<inputs>"``), and its record keeps
  that digest (``inputs``) once it commits: everything made from the earlier output is then stale.

A reader takes an upstream item only if its commit exists and its lineage equals the upstream stage's
current lineage; every other item is skipped and counted with the reason (:func:`mismatch`).

>>> mismatch({"capture": "aaa", "analyze": "bbb"}, {"capture": "aaa", "analyze": "ccc"})
'made with analyze config ccc, current is bbb'
>>> mismatch({"discover": "ddd+111"}, {"discover": "ddd+222"})
'made from another discover output (inputs 222, current 111)'
"""

from __future__ import annotations

import datetime as _dt
import hashlib

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import IntegrityError, MissingKeyError, RunNotFoundError, StoreError
from .keys import RunKeys
from .store import Store, sha256

Lineage = dict[str, str]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StageRecord(BaseModel):
    """A stage's current config in a run."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    stage: str
    after: str | None = Field(description="the stage whose outputs this one reads")
    config: dict = Field(description="the config as JSON, runtime fields included")
    config_hash: str = Field(description="the hash this stage contributes to lineages")
    detail: dict = Field(default_factory=dict, description="what else pins the stage (the data's sha256, ...)")
    inputs: str | None = Field(None, description="a reduce: the digest of what its current commit read")
    at: str = Field(default_factory=_now)

    @property
    def lineage_hash(self) -> str:
        """What this stage contributes to lineages: the config hash, and a reduce's inputs digest."""
        return with_inputs(self.config_hash, self.inputs)


def with_inputs(config_hash: str, inputs: str | None) -> str:
    return config_hash if inputs is None else f"{config_hash}+{inputs}"


def inputs_digest(read: dict[str, str]) -> str:
    """A digest of what a reduce read: every store key and the SHA-256 of its bytes, in key order."""
    return hashlib.sha256("".join(f"{k}\t{v}\n" for k, v in sorted(read.items())).encode()).hexdigest()[:12]


class Commit(BaseModel):
    """One item's commit marker: written after its outputs; its presence means the outputs are complete."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    stage: str
    item: str
    lineage: Lineage
    outputs: dict[str, str] = Field(description="store key -> SHA-256 of the bytes written there")
    counters: dict[str, int | float] = Field(default_factory=dict, description="summed into the run summary")
    detail: dict = Field(default_factory=dict, description="small facts a reader may want without the outputs")
    at: str = Field(default_factory=_now)


def mismatch(current: Lineage, made_with: Lineage) -> str | None:
    """Why an output made with ``made_with`` is not an output of ``current``, or None when it is."""
    for stage in current:
        made, now = made_with.get(stage), current[stage]
        if made != now:
            if made and made.split("+")[0] == now.split("+")[0]:
                return f"made from another {stage} output (inputs {made.partition('+')[2] or 'none'}, current {now.partition('+')[2] or 'none'})"
            return f"made with {stage} config {made or 'none'}, current is {now}"
    extra = sorted(set(made_with) - set(current))
    return f"made with stages {extra} this lineage does not have" if extra else None


def read_record(store: Store, keys: RunKeys, stage: str) -> StageRecord:
    """The stage's current record; RunNotFoundError (naming the command to run) when it has not begun."""
    key = keys.stage_record(stage)
    try:
        return StageRecord.model_validate(store.get_json(key))
    except MissingKeyError:
        raise RunNotFoundError(f"run {keys.run!r} in {store.url} has no {stage} stage ({key} is missing): "
                               f"run `mycelium {'capture' if stage in ('ingest', 'capture') else stage} "
                               f"--run {keys.run}` first") from None
    except (ValidationError, StoreError) as e:
        raise StoreError(key, f"not a stage record: {str(e).splitlines()[0]}") from e


def current_lineage(store: Store, keys: RunKeys, stage: str) -> Lineage:
    """``stage``'s current lineage: the config hash of its record and of every record upstream of it."""
    lineage: Lineage = {}
    while stage is not None:
        record = read_record(store, keys, stage)
        lineage = {stage: record.lineage_hash, **lineage}
        stage = record.after
    return lineage


def read_commit(store: Store, keys: RunKeys, stage: str, item: str) -> Commit | None:
    """The item's commit, None when there is none. A corrupt one raises StoreError naming its key."""
    key = keys.commit(stage, item)
    try:
        return Commit.model_validate(store.get_json(key))
    except MissingKeyError:  # one request, not a HEAD and a GET: it runs for every item of a map
        return None
    except (ValidationError, StoreError) as e:
        raise StoreError(key, f"corrupt commit marker ({str(e).splitlines()[0]}); delete it to redo the item") from e


def verified_bytes(store: Store, commit: Commit, key: str) -> bytes:
    """The bytes at ``key``, checked against the SHA-256 ``commit`` recorded for them (IntegrityError if not)."""
    if key not in commit.outputs:
        raise IntegrityError(commit.item, f"{key} is not among the outputs {commit.stage} committed")
    data = store.get(key)
    if sha256(data) != commit.outputs[key]:
        raise IntegrityError(commit.item, f"{key} changed since {commit.stage} committed it (sha256 differs)")
    return data
