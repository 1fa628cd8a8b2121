"""Templates as regions of X: each template's centroid in the training steps' PCA space (cosine).

Discovery clusters the steps it saw; every other step (a duplicate dropped at aggregate, a step of an
augmented problem) goes to the template whose centroid is nearest. The same rule scores templates out
of sample (``templates.evaluation``).

>>> import numpy as np
>>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
>>> index = TemplateIndex.fit(X, np.array([0, 0, 1, 1]), ["T1", "T2"], dims=2)
>>> index.assign(np.array([[0.95, 0.0]]))[0]
['T1']
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .ib import pca_basis


def unit(E: np.ndarray) -> np.ndarray:
    return E / (np.linalg.norm(E, axis=1, keepdims=True) + 1e-12)


def centroids(E: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
    """[k, d] the normalised mean of each cluster's (normalised) embeddings; an empty cluster stays zero."""
    C = np.zeros((k, E.shape[1]))
    np.add.at(C, assign, E)
    return unit(C)


@dataclass
class TemplateIndex:
    ids: list[str]
    mean: np.ndarray  # [d]
    basis: np.ndarray  # [d, p]
    centroids: np.ndarray  # [k, p]

    @classmethod
    def fit(cls, X: np.ndarray, assign: np.ndarray, ids: list[str], dims: int) -> "TemplateIndex":
        """X: [N, d] step embeddings; assign: [N] template index of each step (0 .. len(ids) - 1)."""
        mean, basis = pca_basis(X.astype(np.float64), dims)
        return cls(list(ids), mean, basis, centroids(unit((X - mean) @ basis), assign, len(ids)))

    def embed(self, X: np.ndarray) -> np.ndarray:
        return unit((np.asarray(X, dtype=np.float64) - self.mean) @ self.basis)

    def assign(self, X: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The nearest template of each row of X [N, d], and its cosine similarity [N]."""
        sims = self.embed(X) @ self.centroids.T  # [N, k]
        best = sims.argmax(1)
        return [self.ids[i] for i in best], sims[np.arange(len(best)), best]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=np.array(self.ids), mean=self.mean, basis=self.basis, centroids=self.centroids)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TemplateIndex":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls([str(i) for i in z["ids"]], z["mean"], z["basis"], z["centroids"])
