"""The run manifest: what a run is, fixed when it is submitted.

``mycelium submit`` uploads the dataset to ``<run>/input/<file>`` and then
``<run>/manifest.json``; on AWS, that upload starts the run. Every stage of a
cloud run reads its config from here, so one object says how a run was made.

>>> m = RunManifest(data="input/gsm8k.jsonl", data_sha256="0" * 64)
>>> m.capture.teacher, m.ingest.shard_size
('embedded', 1000)
>>> run_of_key("runs/gsm8k-train/manifest.json")
'gsm8k-train'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.config import (AggregateConfig, AnalyzeConfig, CaptureConfig, DiscoverConfig, ImproveConfig, IngestConfig,
                           LabelConfig, MergeConfig)
from ..core.errors import MyceliumError
from ..core.keys import RunKeys
from ..core.store import Store, sha256
from ..core.versions import MANIFEST_VERSION

MANIFEST = "manifest.json"


class MapConfig(BaseModel):
    """How the cloud run's Distributed Map (analyze, one Lambda per chunk) runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_concurrency: int = Field(200, ge=1, le=10000, description="chunks analysed at once (Lambda concurrency)")
    tolerated_failure_percentage: float = Field(5.0, ge=0, le=100, description="failed chunks the run survives")


class RunManifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[MANIFEST_VERSION] = MANIFEST_VERSION
    data: str = Field(pattern=r"^input/[A-Za-z0-9._-]+$", description="the dataset's key under the run")
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    ingest: IngestConfig = IngestConfig()
    capture: CaptureConfig = CaptureConfig(progress=False, device="auto")
    analyze: AnalyzeConfig = AnalyzeConfig(progress=False)
    aggregate: AggregateConfig = AggregateConfig()
    discover: DiscoverConfig = DiscoverConfig(progress=False)
    label: LabelConfig = LabelConfig(progress=False)
    merge: MergeConfig = MergeConfig()
    improve: ImproveConfig = ImproveConfig(progress=False)
    map: MapConfig = MapConfig()


def manifest_key(keys: RunKeys) -> str:
    return keys(MANIFEST)


def run_of_key(key: str, prefix: str = "runs") -> str:
    """The run name of a ``<prefix>/<run>/manifest.json`` bucket key."""
    head = re.escape(prefix.strip("/")) + "/" if prefix.strip("/") else ""
    m = re.fullmatch(head + r"([^/]+)/" + re.escape(MANIFEST), key)
    if not m:
        raise MyceliumError(f"{key}: not a run manifest key ({head}<run>/{MANIFEST})")
    return RunKeys(m.group(1)).run


def load_manifest(store: Store, keys: RunKeys) -> RunManifest:
    key = manifest_key(keys)
    if not store.exists(key):
        raise MyceliumError(f"{store.url}/{key}: no run manifest (upload one with `mycelium submit`)")
    try:
        return RunManifest.model_validate(store.get_json(key))
    except (ValidationError, ValueError) as e:
        raise MyceliumError(f"{store.url}/{key}: bad run manifest: {e}") from e


def submit(store: Store, keys: RunKeys, data: str | Path, **configs) -> RunManifest:
    """Upload ``data`` to ``<run>/input/``, then the manifest (last: on AWS its upload starts the run).

    ``configs`` are the manifest's config fields (``ingest=IngestConfig(...)``, ``capture=...``).
    Submitting the same run again with the same data and configs rewrites the same objects.
    """
    path = Path(data)
    if not path.is_file():
        raise MyceliumError(f"--data {data}: no such file")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    blob = path.read_bytes()
    manifest = RunManifest(data=f"input/{name}", data_sha256=sha256(blob), **configs)
    key = manifest_key(keys)
    if store.exists(key):
        old = load_manifest(store, keys)
        if old != manifest:
            raise MyceliumError(f"run {keys.run!r} was submitted with other data or configs; choose a new --run name")
    store.put(keys(manifest.data), blob)
    store.put_json(key, manifest.model_dump(mode="json"))
    return manifest
