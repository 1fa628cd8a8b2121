"""The chunk: one problem's captured attention signals, compressed, no pickles. Format v2 (v1 still read).

A chunk is a zip (``numpy.savez_compressed``) of named arrays plus ``meta`` (UTF-8 JSON: format_version,
problem_id, model_id, ...). L layers, H heads, T CoT tokens, P problem tokens, d hidden size, k computing heads.

**v2** keeps what later stages read, in the precision they need:

============== ============ ======= ====================================================================
name           shape        dtype   meaning
============== ============ ======= ====================================================================
iaf_q          [L, H, T]    uint8   input attention fraction, round(255 * iaf), iaf in [0, 1]
jsd_q          [L, H, T]    uint8   JSD (nats) to row t-1, round(255 * jsd / ln 2), jsd in [0, ln 2]
entropy        [L, 1, T]    float16 entropy (nats) of the row, mean over the layer's heads
connectivity   [L, 1, T]    float16 keys with weight above the threshold, mean over the layer's heads
attn_q         [1+k, T, P]  uint8   attention of CoT tokens over the problem, round(255 * a / row max):
                                    row 0 the mean over every layer and head, then the computing heads
attn_scale     [1+k, T]     float32 each row's max (the scale of ``attn_q``)
head_set       [1+k, 2]     int16   (layer, head) of each attn slice; (-1, -1) = mean over layers and heads
hidden_q       [T, d]       int8    hidden states of one layer, round(h / hidden_scale) per channel
hidden_scale   [d]          float32 each channel's max |h| / 127
cot_token_ids  [T]          int32   CoT token ids (same as the trace's)
============== ============ ======= ====================================================================

Quantisation error (round to nearest; :func:`max_error`, tested): IAF at most 1/510 (0.002), JSD at most
ln 2 / 510 (0.0014 nats), attention at most its row's max / 510, a hidden state at most its channel's
max |h| / 254. Analysis reads the JSD mean over layers and heads (boundaries), the computing heads' IAF
(heartbeats), the computing heads' or all-layer mean attention over the problem (mapping) and step means of
``hidden`` (embeddings): each within those bounds of the v1 value.

**v1** (``CHUNK_FORMAT_VERSION`` 1, still decoded): iaf, jsd, entropy, connectivity [L, H, T] float16;
attn_problem [L + k, T, P] float16 (every layer's head mean, then the computing heads); head_set [L + k, 2]
(head -1 = that layer's mean); hidden [T, d] float16; cot_token_ids.

In memory a :class:`Chunk` holds float arrays of either version (v2 dequantised). All rows are
generation-phase and renormalised after removing attention sinks (first token, chat-template tokens); see
mycelium.analysis.signals. The row of CoT token t is the query that produced it (position p-1+t, p = prompt
length), and ``hidden`` holds the states at those positions.

Bytes per problem before compression (:func:`bytes_per_problem`):
v2 ``2*L*H*T + 4*L*T + (1+k)*T*P + 4*(1+k)*T + T*d + 4*d + 4*(1+k) + 4*T + ~1 KB``;
v1 ``2*(4*L*H*T + S*T*P + T*d) + 4*S + 4*T + ~1 KB`` with S = L + k.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ChunkFormatError
from ..core.versions import CHUNK_FORMAT_VERSION as FORMAT_VERSION

SIGNAL_NAMES = ("iaf", "jsd", "entropy", "connectivity")
ARRAY_NAMES = (*SIGNAL_NAMES, "attn_problem", "head_set", "hidden", "cot_token_ids")
FORMATS = (1, 2)
META_BYTES_ESTIMATE = 1024
LN2 = math.log(2.0)
_Q = 255  # uint8 levels of a bounded signal
_HQ = 127  # int8 levels of a hidden state


def bytes_per_problem(n_layers: int, n_heads: int, t_gen: int, n_problem: int, hidden: int, n_computing: int,
                      version: int = FORMAT_VERSION) -> int:
    """Uncompressed bytes of one chunk of format ``version`` (arrays + meta estimate)."""
    L, H, T, P, d, k = n_layers, n_heads, t_gen, n_problem, hidden, n_computing
    if version == 1:
        s = L + k
        return 2 * (4 * L * H * T + s * T * P + T * d) + 2 * 2 * s + 4 * T + META_BYTES_ESTIMATE
    s = 1 + k
    return 2 * L * H * T + 2 * 2 * L * T + s * T * P + 4 * s * T + T * d + 4 * d + 2 * 2 * s + 4 * T \
        + META_BYTES_ESTIMATE


def max_error(name: str, chunk: "Chunk | None" = None) -> float | np.ndarray:
    """The largest v2 quantisation error of an array: a number for the bounded signals; per row (attention,
    [S, T, 1]) or per channel (hidden, [d]) given the full-precision ``chunk``."""
    if name == "iaf":
        return 0.5 / _Q
    if name == "jsd":
        return 0.5 * LN2 / _Q
    if name == "attn_problem":
        return _row_max(_all_mean(chunk)[1])[..., None] * (0.5 / _Q)
    if name == "hidden":
        return np.abs(chunk.hidden.astype(np.float32)).max(0) * (0.5 / _HQ)
    raise KeyError(name)


@dataclass
class Chunk:
    meta: dict[str, Any]
    iaf: np.ndarray  # [L, H, T]
    jsd: np.ndarray  # [L, H, T]
    entropy: np.ndarray  # [L, H, T] (v1, and as captured) or [L, 1, T] (v2: head mean)
    connectivity: np.ndarray  # like entropy
    attn_problem: np.ndarray  # [S, T, P]
    head_set: np.ndarray  # [S, 2]
    hidden: np.ndarray  # [T, d]
    cot_token_ids: np.ndarray  # [T]

    @property
    def problem_id(self) -> str:
        return self.meta["problem_id"]

    @property
    def format_version(self) -> int | None:
        return self.meta.get("format_version")

    def layer_mean_attention(self) -> np.ndarray:
        """[L, T, P] each layer's head-mean attention over the problem (as captured, v1), or [1, T, P] the mean
        over every layer and head (v2): either way ``.mean(0)`` is the mean over layers and heads."""
        return self.attn_problem[self.head_set[:, 1] == -1]

    def computing_head_attention(self) -> np.ndarray:
        """[k, T, P]: the computing heads' attention over the problem."""
        return self.attn_problem[self.head_set[:, 1] >= 0]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_NAMES}


def encode_chunk(chunk: Chunk, version: int = FORMAT_VERSION) -> bytes:
    """The chunk's bytes in format ``version`` (2: quantised and reduced, see the module docstring)."""
    if version not in FORMATS:
        raise ChunkFormatError(chunk.meta.get("problem_id", "?"), f"cannot write format version {version!r}")
    arrays = chunk.arrays()
    _validate(arrays, chunk.meta, key=chunk.meta.get("problem_id", "?"))
    out = _v1_arrays(arrays) if version == 1 else _v2_arrays(chunk)
    meta = dict(chunk.meta, format_version=version)
    out["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()


def decode_chunk(data: bytes, key: str = "<bytes>") -> Chunk:
    """Parse and validate a chunk of any known format; raise ChunkFormatError naming ``key`` if it is corrupt."""
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
    if version not in FORMATS:
        raise ChunkFormatError(key, f"format version {version!r}; this reader knows {', '.join(map(str, FORMATS))}")
    if version == 2:
        arrays = _from_v2(arrays, key)
    _validate(arrays, meta, key)
    return Chunk(meta=meta, **arrays)


# ---- v1: everything as captured, float16 ------------------------------------------------------------


def _v1_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    casts = {"head_set": np.int16, "cot_token_ids": np.int32}
    return {n: np.ascontiguousarray(a, dtype=casts.get(n, np.float16)) for n, a in arrays.items()}


# ---- v2: reduced and quantised ----------------------------------------------------------------------


def _all_mean(chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
    """(head_set [1+k, 2], attention [1+k, T, P]): the mean over every layer and head, then the computing heads."""
    means = chunk.layer_mean_attention().astype(np.float32)
    comp = chunk.head_set[chunk.head_set[:, 1] >= 0]
    heads = np.concatenate([[(-1, -1)], comp]).astype(np.int16).reshape(-1, 2)
    return heads, np.concatenate([means.mean(0, keepdims=True), chunk.computing_head_attention().astype(np.float32)])


def _row_max(a: np.ndarray) -> np.ndarray:
    return a.max(-1) if a.shape[-1] else np.zeros(a.shape[:-1], a.dtype)


def _unit(x: np.ndarray, top: float) -> np.ndarray:
    """uint8 of x in [0, top] (values outside are clipped to it)."""
    return np.rint(np.clip(np.asarray(x, np.float32), 0.0, top) * (_Q / top)).astype(np.uint8)


def _v2_arrays(chunk: Chunk) -> dict[str, np.ndarray]:
    heads, attn = _all_mean(chunk)
    scale = _row_max(attn).astype(np.float32)  # [S, T]
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    hidden = np.asarray(chunk.hidden, np.float32)
    h_scale = (np.abs(hidden).max(0) / _HQ).astype(np.float32) if len(hidden) else np.ones(hidden.shape[1], np.float32)
    h_safe = np.where(h_scale > 0, h_scale, 1.0)
    head_mean = lambda a: np.asarray(a, np.float32).mean(1, keepdims=True).astype(np.float16)  # noqa: E731
    return {
        "iaf_q": _unit(chunk.iaf, 1.0), "jsd_q": _unit(chunk.jsd, LN2),
        "entropy": head_mean(chunk.entropy), "connectivity": head_mean(chunk.connectivity),
        "attn_q": np.rint(np.clip(attn / safe, 0.0, 1.0) * _Q).astype(np.uint8), "attn_scale": scale,
        "head_set": heads, "hidden_q": np.rint(hidden / h_safe).astype(np.int8), "hidden_scale": h_scale,
        "cot_token_ids": np.ascontiguousarray(chunk.cot_token_ids, dtype=np.int32),
    }


def _from_v2(z: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    need = {"iaf_q", "jsd_q", "entropy", "connectivity", "attn_q", "attn_scale", "head_set", "hidden_q",
            "hidden_scale", "cot_token_ids"}
    if missing := need - z.keys():
        raise ChunkFormatError(key, f"missing arrays {sorted(missing)}")
    types = {"iaf_q": np.uint8, "jsd_q": np.uint8, "attn_q": np.uint8, "hidden_q": np.int8}
    for name, dtype in types.items():
        if z[name].dtype != dtype:
            raise ChunkFormatError(key, f"{name} is {z[name].dtype}, expected {np.dtype(dtype)}")
    attn, scale, hq, hs = z["attn_q"], z["attn_scale"], z["hidden_q"], z["hidden_scale"]
    if attn.ndim != 3 or scale.shape != attn.shape[:2]:
        raise ChunkFormatError(key, f"attn_scale shape {scale.shape} does not fit attn_q {attn.shape}")
    if hq.ndim != 2 or hs.shape != hq.shape[1:]:
        raise ChunkFormatError(key, f"hidden_scale shape {hs.shape} does not fit hidden_q {hq.shape}")
    return {
        "iaf": z["iaf_q"].astype(np.float32) / _Q, "jsd": z["jsd_q"].astype(np.float32) * (LN2 / _Q),
        "entropy": z["entropy"], "connectivity": z["connectivity"],
        "attn_problem": attn.astype(np.float32) * (scale.astype(np.float32)[..., None] / _Q),
        "head_set": z["head_set"], "hidden": hq.astype(np.float32) * hs.astype(np.float32),
        "cot_token_ids": z["cot_token_ids"],
    }


def _validate(arrays: dict[str, np.ndarray], meta: dict, key: str) -> None:
    missing = set(ARRAY_NAMES) - arrays.keys()
    if missing:
        raise ChunkFormatError(key, f"missing arrays {sorted(missing)}")
    dims = {"iaf": 3, "attn_problem": 3, "head_set": 2, "hidden": 2, "cot_token_ids": 1}
    for name, nd in dims.items():
        if arrays[name].ndim != nd:
            raise ChunkFormatError(key, f"{name} has {arrays[name].ndim} dimensions, expected {nd}")
    L, H, T = arrays["iaf"].shape
    if arrays["jsd"].shape != (L, H, T):
        raise ChunkFormatError(key, f"jsd has shape {arrays['jsd'].shape}, expected {(L, H, T)}")
    for name in ("entropy", "connectivity"):
        if arrays[name].shape not in {(L, H, T), (L, 1, T)}:
            raise ChunkFormatError(key, f"{name} has shape {arrays[name].shape}, expected {(L, H, T)} or {(L, 1, T)}")
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
