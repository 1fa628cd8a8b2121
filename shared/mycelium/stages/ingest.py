"""Stage 1, ingest (a reduce): dataset file -> ``problems/part-*.jsonl`` (sharded, stable ids).

Bad rows are ledger entries naming file and line, counted, and the good rows go on. The run is pinned
to its data (sha256) and format: another file under the same run name is refused. ``--limit`` and the
shard size only choose which problems the run has: another limit re-shards the run (the commit lists
the current shards; shards left over from a larger limit are deleted), and every later stage takes
only the problems the current shards hold, so nothing is silently mixed. Chunks already captured stay
valid: a problem's record does not depend on the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..core.config import IngestConfig, digest
from ..core.errors import BadRowError, MyceliumError
from ..core.ledger import record_failure
from ..core.store import Store, file_sha256
from ..core.summary import StageSummary
from ..records.datasets import read_dataset
from .base import Outputs, ReduceStage

log = logging.getLogger(__name__)


class IngestStage(ReduceStage):
    name = "ingest"
    pinned = True
    config_type = IngestConfig

    def __init__(self, store: Store, run: str, config: IngestConfig, data: str | Path | None = None, *,
                 data_name: str | None = None, token_counter: Callable[[str], int] | None = None,
                 max_tokens: int | None = None):
        """``data``: the dataset file; ``data_name``: how the run names it (default: the path).

        ``token_counter`` and ``max_tokens`` refuse problems over the teacher's budget (bad rows).
        """
        super().__init__(store, run, config)
        self.data = Path(data) if data is not None else None
        self.data_name = data_name or (str(data) if data is not None else None)
        self.token_counter, self.max_tokens = token_counter, max_tokens

    @property
    def data_sha256(self) -> str:
        if self.data is None or not self.data.is_file():
            raise MyceliumError(f"--data {self.data}: no such file")
        if not hasattr(self, "_sha"):
            self._sha = file_sha256(self.data)
        return self._sha

    def config_hash(self) -> str:
        """What a problem's record depends on: the data and how it is read (not which problems, nor how many)."""
        fields = {k: v for k, v in self.config.output_fields().items() if k not in IngestConfig.selection_fields}
        return digest({**fields, "data_sha256": self.data_sha256, "_class": "ingest"})

    def record_detail(self) -> dict:
        return {"data": self.data_name, "data_sha256": self.data_sha256}

    def process(self, item: str) -> Outputs:
        cfg, keys = self.config, self.keys
        summary = StageSummary()
        seen: set[str] = set()
        shards: dict[str, bytes] = {}
        rows: list[str] = []

        def flush():
            if rows:
                shards[keys.shard(len(shards))] = ("\n".join(rows) + "\n").encode()
                rows.clear()

        for row in read_dataset(self.data, cfg.dataset_format, token_counter=self.token_counter,
                                max_tokens=self.max_tokens):
            if cfg.limit is not None and summary.n_out >= cfg.limit:
                break
            summary.n_in += 1
            if isinstance(row, BadRowError):
                summary.failed += 1
                log.warning("bad row: %s", row)
                record_failure(self.store, keys, self.name, f"{Path(row.file).name}-L{row.line}", str(row))
                continue
            if row.id in seen:
                summary.skip("duplicate problem")
                continue
            seen.add(row.id)
            rows.append(row.model_dump_json())
            summary.n_out += 1
            if len(rows) >= cfg.shard_size:
                flush()
        flush()
        if not shards:
            raise MyceliumError(f"{self.data_name}: no usable problems (see {keys.failures(self.name)})")
        stale = [k for k in self.store.list(keys("problems", "part-")) if k not in shards]
        return Outputs(files=shards, counters={"shards": len(shards)}, summary=summary, stale=stale,
                       detail={"shards": list(shards), "problems": summary.n_out, "data": self.data_name})
