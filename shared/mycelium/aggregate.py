"""Stage 4, aggregate (a reduce): every analysed step of a run -> the IB inputs.

Reads ``steps/*.jsonl``; drops steps without labels and duplicates (counted);
writes ``ib/steps.npz`` (X: float32 [N, d] step embeddings; Y: float32 [N, V],
each step's op-label set as a uniform distribution over its labels; the label
vocabulary) and ``ib/index.jsonl`` (one line per row: problem, step, texts).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass

import numpy as np

from .artifacts import StageSummary, StepRecord
from .errors import MyceliumError
from .runs import RunKeys
from .store import Store


@dataclass
class StepTable:
    X: np.ndarray  # [N, d] float32
    Y: np.ndarray  # [N, V] float32, rows sum to 1
    vocab: list[str]
    index: list[dict]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, X=self.X, Y=self.Y, vocab=np.array(self.vocab))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, index: list[dict]) -> "StepTable":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(X=z["X"], Y=z["Y"], vocab=[str(v) for v in z["vocab"]], index=index)


def _row_index(step: StepRecord) -> dict:
    parsed = [e for e in step.expressions if e.ok]
    spans = [m.text for m in step.mapped_spans]
    return {"problem_id": step.problem_id, "dataset": step.dataset, "step": step.index, "labels": step.labels,
            "text": step.text.strip(), "expression": parsed[0].sympy if parsed else None,
            "problem_span": max(step.mapped_spans, key=lambda m: m.score).text if spans else None}


def aggregate(store: Store, run: str, summary: StageSummary) -> StepTable:
    """Collect the run's labelled steps; write ``ib/steps.npz`` and ``ib/index.jsonl``."""
    keys = RunKeys(run)
    t0 = time.perf_counter()
    rows: list[tuple[StepRecord, np.ndarray]] = []
    seen_steps: set[tuple[str, int, int]] = set()
    seen_vectors: set[bytes] = set()
    for key in store.list(keys("steps", "")):
        for lineno, line in enumerate(store.get(key).decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                step = StepRecord.model_validate_json(line)
            except ValueError as e:
                raise MyceliumError(f"{key}:{lineno}: not a valid step record ({str(e).splitlines()[0]})") from e
            summary.n_in += 1
            if not step.labels:
                summary.skip("no op labels")
                continue
            emb = step.embedding.to_array()
            ident = (step.problem_id, step.char_start, step.char_end)
            digest = hashlib.sha1(emb.tobytes() + "|".join(step.labels).encode()).digest()
            if ident in seen_steps or digest in seen_vectors:
                summary.skip("duplicate")
                continue
            seen_steps.add(ident)
            seen_vectors.add(digest)
            rows.append((step, emb))
    if not rows:
        raise MyceliumError(f"run {run!r}: no labelled steps to aggregate (run `mycelium analyze --run {run}` first)")
    dims = {len(e) for _, e in rows}
    if len(dims) != 1:
        raise MyceliumError(f"run {run!r}: step embeddings of different sizes {sorted(dims)} (mixed teachers?)")
    vocab = sorted({l for s, _ in rows for l in s.labels})
    col = {l: i for i, l in enumerate(vocab)}
    X = np.stack([e for _, e in rows]).astype(np.float32)  # [N, d]
    Y = np.zeros((len(rows), len(vocab)), np.float32)  # [N, V]
    for i, (s, _) in enumerate(rows):
        Y[i, [col[l] for l in s.labels]] = 1.0 / len(s.labels)
    table = StepTable(X=X, Y=Y, vocab=vocab, index=[_row_index(s) for s, _ in rows])
    store.put(keys("ib", "steps.npz"), table.to_bytes())
    store.put(keys("ib", "index.jsonl"), "".join(json.dumps(r) + "\n" for r in table.index).encode())
    summary.n_out = len(rows)
    summary.counters.update({"dims": int(X.shape[1]), "labels": len(vocab)})
    summary.seconds = time.perf_counter() - t0
    return table


def load_table(store: Store, run: str) -> StepTable:
    keys = RunKeys(run)
    index = [json.loads(l) for l in store.get(keys("ib", "index.jsonl")).decode().splitlines() if l]
    return StepTable.from_bytes(store.get(keys("ib", "steps.npz")), index)


def aggregate_run(store: Store, run: str) -> tuple[StageSummary, StepTable]:
    """:func:`aggregate` with the run summary kept: the ``aggregate`` stage is recorded even on failure."""
    from .runs import load_summary, save_summary

    keys = RunKeys(run)
    summary = load_summary(store, keys)
    stage = summary.stages["aggregate"] = StageSummary()
    try:
        table = aggregate(store, run, stage)
    finally:
        save_summary(store, keys, summary)
    return stage, table
