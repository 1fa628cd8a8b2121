"""Chunk format v1: one problem's captured attention signals, fp16, compressed.

A chunk is a zip (``numpy.savez_compressed``) of named arrays, no pickles:

============== ================ ======= ===================================================
name           shape            dtype   meaning
============== ================ ======= ===================================================
iaf            [L, H, T]        float16 input attention fraction per layer, head, CoT token
jsd            [L, H, T]        float16 JSD (nats) between token t's row and row t-1
entropy        [L, H, T]        float16 entropy (nats) of the row
connectivity   [L, H, T]        float16 keys with weight above the threshold (exact up to 2048)
attn_problem   [S, T, P]        float16 attention of CoT tokens over the P problem tokens
head_set       [S, 2]           int16   (layer, head) of each attn_problem slice; head -1 = layer mean
hidden         [T, d]           float16 hidden states of one layer at the CoT tokens
cot_token_ids  [T]              int32   CoT token ids (same as the trace's)
meta           [n]              uint8   UTF-8 JSON: format_version, problem_id, model_id, ...
============== ================ ======= ===================================================

All rows are generation-phase and renormalised after removing attention sinks
(first token, chat-template tokens); see mycelium.analysis.signals. The row of CoT token t
is the query that produced it (position p-1+t, p = prompt length), and ``hidden``
holds the states at those positions.
L layers, H heads, T CoT tokens, P problem tokens, d hidden size,
S = L + k (one head-mean per layer plus k computing heads).

Bytes per problem before compression (:func:`bytes_per_problem`):
``2 * (4*L*H*T + S*T*P + T*d) + 4*S + 4*T + ~1 KB meta``.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ChunkFormatError
from ..core.versions import CHUNK_FORMAT_VERSION as FORMAT_VERSION

SIGNAL_NAMES = ("iaf", "jsd", "entropy", "connectivity")
META_BYTES_ESTIMATE = 1024


def bytes_per_problem(n_layers: int, n_heads: int, t_gen: int, n_problem: int, hidden: int, n_computing: int) -> int:
    """Uncompressed bytes of one v1 chunk (fp16 arrays + ids + meta estimate)."""
    s = n_layers + n_computing
    fp16 = 4 * n_layers * n_heads * t_gen + s * t_gen * n_problem + t_gen * hidden
    return 2 * fp16 + 2 * 2 * s + 4 * t_gen + META_BYTES_ESTIMATE


@dataclass
class Chunk:
    meta: dict[str, Any]
    iaf: np.ndarray  # [L, H, T]
    jsd: np.ndarray  # [L, H, T]
    entropy: np.ndarray  # [L, H, T]
    connectivity: np.ndarray  # [L, H, T]
    attn_problem: np.ndarray  # [S, T, P]
    head_set: np.ndarray  # [S, 2]
    hidden: np.ndarray  # [T, d]
    cot_token_ids: np.ndarray  # [T]

    @property
    def problem_id(self) -> str:
        return self.meta["problem_id"]

    def layer_mean_attention(self) -> np.ndarray:
        """[L, T, P]: each layer's head-mean attention over the problem."""
        return self.attn_problem[self.head_set[:, 1] == -1]

    def computing_head_attention(self) -> np.ndarray:
        """[k, T, P]: the computing heads' attention over the problem."""
        return self.attn_problem[self.head_set[:, 1] >= 0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in (*SIGNAL_NAMES, "attn_problem", "head_set", "hidden", "cot_token_ids")}


def encode_chunk(chunk: Chunk) -> bytes:
    arrays = chunk.arrays()
    _validate(arrays, chunk.meta, key=chunk.meta.get("problem_id", "?"))
    casts = {"head_set": np.int16, "cot_token_ids": np.int32}
    out = {n: np.ascontiguousarray(a, dtype=casts.get(n, np.float16)) for n, a in arrays.items()}
    meta = dict(chunk.meta, format_version=FORMAT_VERSION)
    out["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()


def decode_chunk(data: bytes, key: str = "<bytes>") -> Chunk:
    """Parse and validate a chunk; raise ChunkFormatError naming ``key`` if it is corrupt."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, NotImplementedError) as e:
        raise ChunkFormatError(key, f"unreadable ({type(e).__name__}: {e})") from e
    if "meta" not in arrays:
        raise ChunkFormatError(key, "no 'meta' entry")
    try:
        meta = json.loads(arrays.pop("meta").tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ChunkFormatError(key, f"meta is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ChunkFormatError(key, f"meta is a JSON {type(meta).__name__}, expected an object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ChunkFormatError(key, f"format version {version!r}; this reader knows {FORMAT_VERSION}")
    _validate(arrays, meta, key)
    return Chunk(meta=meta, **arrays)


def _validate(arrays: dict[str, np.ndarray], meta: dict, key: str) -> None:
    need = {*SIGNAL_NAMES, "attn_problem", "head_set", "hidden", "cot_token_ids"}
    missing = need - arrays.keys()
    if missing:
        raise ChunkFormatError(key, f"missing arrays {sorted(missing)}")
    dims = {"iaf": 3, "attn_problem": 3, "head_set": 2, "hidden": 2, "cot_token_ids": 1}
    for name, nd in dims.items():
        if arrays[name].ndim != nd:
            raise ChunkFormatError(key, f"{name} has {arrays[name].ndim} dimensions, expected {nd}")
    L, H, T = arrays["iaf"].shape
    for name in SIGNAL_NAMES:
        if arrays[name].shape != (L, H, T):
            raise ChunkFormatError(key, f"{name} has shape {arrays[name].shape}, expected {(L, H, T)}")
    S, t2, P = arrays["attn_problem"].shape
    checks = [
        (t2 == T, f"attn_problem has {t2} tokens, signals have {T}"),
        (arrays["head_set"].shape == (S, 2), f"head_set shape {arrays['head_set'].shape}, expected {(S, 2)}"),
        (arrays["hidden"].ndim == 2 and arrays["hidden"].shape[0] == T, f"hidden shape {arrays['hidden'].shape}"),
        (arrays["cot_token_ids"].shape == (T,), f"cot_token_ids shape {arrays['cot_token_ids'].shape}"),
        (meta.get("n_problem_tokens", P) == P, "n_problem_tokens disagrees with attn_problem"),
    ]
    for ok, why in checks:
        if not ok:
            raise ChunkFormatError(key, why)
