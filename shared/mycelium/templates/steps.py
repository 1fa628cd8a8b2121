"""The IB inputs: every labelled step of a run as X (step embeddings) and Y (op-label distributions).

Pure: :class:`StepTableBuilder` takes StepRecords (the aggregate stage reads them) and says why it
drops one (no op labels, a duplicate); :class:`StepTable` is what discovery reads.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import MyceliumError
from ..records.analysis import StepRecord


@dataclass
class StepTable:
    X: np.ndarray  # [N, d] float32 step embeddings
    Y: np.ndarray  # [N, V] float32, each row the step's op-label set as a uniform distribution
    vocab: list[str]
    index: list[dict]  # one per row: problem, step, labels, texts

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
    return {"problem_id": step.problem_id, "dataset": step.dataset, "step": step.index, "labels": step.labels,
            "text": step.text.strip(), "expression": parsed[0].sympy if parsed else None,
            "problem_span": max(step.mapped_spans, key=lambda m: m.score).text if step.mapped_spans else None}


@dataclass
class StepTableBuilder:
    """Collects labelled steps, once each: the same span of a problem, or the same embedding and labels, is a duplicate."""

    rows: list[tuple[StepRecord, np.ndarray]] = field(default_factory=list)
    _spans: set = field(default_factory=set)
    _digests: set = field(default_factory=set)

    def add(self, step: StepRecord) -> str | None:
        """Keep ``step``; or return why it is dropped."""
        if not step.labels:
            return "no op labels"
        emb = step.embedding.to_array()
        span = (step.problem_id, step.char_start, step.char_end)
        digest = hashlib.sha1(emb.tobytes() + "|".join(step.labels).encode()).digest()
        if span in self._spans or digest in self._digests:
            return "duplicate"
        self._spans.add(span)
        self._digests.add(digest)
        self.rows.append((step, emb))
        return None

    def build(self) -> StepTable:
        if not self.rows:
            raise MyceliumError("no labelled steps to aggregate")
        dims = {len(e) for _, e in self.rows}
        if len(dims) != 1:
            raise MyceliumError(f"step embeddings of different sizes {sorted(dims)} (mixed teachers?)")
        vocab = sorted({l for s, _ in self.rows for l in s.labels})
        col = {l: i for i, l in enumerate(vocab)}
        X = np.stack([e for _, e in self.rows]).astype(np.float32)  # [N, d]
        Y = np.zeros((len(self.rows), len(vocab)), np.float32)  # [N, V]
        for i, (s, _) in enumerate(self.rows):
            Y[i, [col[l] for l in s.labels]] = 1.0 / len(s.labels)
        return StepTable(X=X, Y=Y, vocab=vocab, index=[_row_index(s) for s, _ in self.rows])
