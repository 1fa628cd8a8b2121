"""The students' view of a problem: the backbone's tokens and the frozen part of its encoding, computed once.

A student reads the problem text alone, tokenized by its backbone (exact character offsets, so character-span
targets map onto any tokenizer). The bottom ``L - K`` layers of the backbone are frozen: their output for a
text is computed once (``frozen_features``) and every component and epoch reuses it; the top ``K`` layers
(``--train-layers``) run in the student and are trained. On a CPU K = 0 (heads and a small bidirectional adapter
on cached features) is what is affordable; on a GPU K can be the whole backbone.

With ``placeholders`` the backbone reads the text with every number mention replaced by ``N0, N1, …`` (in text
order), so a student learns the problem's structure rather than its particular numbers; token offsets are mapped
back to the original characters, so every target and every downstream reader stays in the original text.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_TOKENS = 320


@dataclass(frozen=True)
class Encoded:
    """One text: token ids, each token's character span, and the frozen layers' output [T, d] (float16)."""

    ids: np.ndarray
    offsets: np.ndarray  # [T, 2]
    features: np.ndarray  # [T, d]

    def layers(self, have, want) -> "Encoded":
        """Stacked features of hidden states ``have`` ([T, len(have), d]) cut to ``want``, in that order."""
        if list(have) == list(want):
            return self
        return Encoded(self.ids, self.offsets, np.ascontiguousarray(self.features[:, [list(have).index(i)
                                                                                       for i in want]]))


def backbone_id(teacher) -> str:
    """What a saved student's weights depend on: the backbone's name, shape and vocabulary."""
    c = teacher.config
    vocab = hashlib.sha256("\n".join(sorted(teacher.tokenizer.get_vocab())).encode()).hexdigest()[:12]
    return f"{teacher.model_id}|L{c.num_hidden_layers}|d{c.hidden_size}|vocab:{vocab}"


def tokenize(tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True,
                    truncation=True, max_length=MAX_TOKENS)
    return np.asarray(enc["input_ids"], dtype=np.int64), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def abstract_numbers(text: str) -> tuple[str, np.ndarray]:
    """``text`` with its number mentions as ``N0, N1, …``, and for each of its characters the original span
    [start, end) it stands for (a placeholder's characters: the whole mention)."""
    from ..analysis.numwords import mentions

    parts, spans, at = [], [], 0
    for i, m in enumerate(mentions(text)):
        if m.start < at:  # overlapping mentions: the first one stands
            continue
        parts.append(text[at:m.start])
        spans += [(j, j + 1) for j in range(at, m.start)]
        tag = f"N{i}"
        parts.append(tag)
        spans += [(m.start, m.end)] * len(tag)
        at = m.end
    parts.append(text[at:])
    spans += [(j, j + 1) for j in range(at, len(text))]
    return "".join(parts), np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def tokenize_for(tokenizer, text: str, placeholders: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and each token's span in the *original* text (of the abstracted text, with placeholders)."""
    if not placeholders:
        return tokenize(tokenizer, text)
    abstract, spans = abstract_numbers(text)
    ids, offsets = tokenize(tokenizer, abstract)
    out = np.zeros_like(offsets)
    for r, (s, e) in enumerate(offsets):
        if e > s:
            out[r] = (spans[s][0], spans[e - 1][1])
        else:
            out[r] = (spans[min(s, len(spans) - 1)][0],) * 2 if len(spans) else (0, 0)
    return ids, out


def tokens_of_span(offsets: np.ndarray, span) -> tuple[int, int]:
    """Token range [i, j) of the tokens overlapping characters span = (start, end)."""
    s, e = span
    inside = np.flatnonzero((offsets[:, 0] < e) & (offsets[:, 1] > s))
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


class FeatureCache:
    """Encoded texts on disk, one ``.npz`` per text, keyed by the backbone's id and precision, the layer, the
    placeholders flag and the text: a second training run on the same problems skips the backbone entirely."""

    def __init__(self, root: Path, teacher, layer: int | tuple[int, ...], placeholders: bool):
        dtype = next(teacher.model.parameters()).dtype
        self.root = Path(root)
        name = f"layer{layer}" if isinstance(layer, int) else "layers" + "-".join(map(str, layer))
        self.prefix = f"{backbone_id(teacher)}|{dtype}|{name}|placeholders{int(placeholders)}|max{MAX_TOKENS}|"

    def path(self, text: str) -> Path:
        key = hashlib.sha256((self.prefix + text).encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npz"

    def get(self, text: str) -> Encoded | None:
        try:
            with np.load(self.path(text)) as z:
                return Encoded(z["ids"], z["offsets"], z["features"])
        except (OSError, KeyError, ValueError):  # absent, or a torn write: computed again
            return None

    def put(self, text: str, enc: Encoded) -> None:
        path = self.path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, ids=enc.ids, offsets=enc.offsets, features=enc.features)
        os.replace(tmp, path)  # readers never see half a file, and ranks writing the same text agree


def frozen_features(teacher, texts: list[str], train_layers: int, batch_size: int = 16,
                    progress: bool = True, placeholders: bool = False, cache: Path | None = None,
                    layers: tuple[int, ...] | None = None) -> dict[str, Encoded]:
    """text -> Encoded, with the output of the bottom ``L - train_layers`` layers (never recomputed per epoch);
    with ``placeholders``, of the text with its numbers as N0, N1, … (offsets in the original text). With
    ``cache`` (a directory), texts encoded before are read from it and new ones are added. With ``layers``
    (hidden-state indices, 0 the embeddings, L the last layer after the final norm), the features are those
    layers stacked, [T, len(layers), d], for a student that learns its own mix of depths."""
    import torch
    from tqdm import tqdm

    n_layers = teacher.config.num_hidden_layers
    if not 0 <= train_layers <= n_layers:
        raise ValueError(f"train_layers {train_layers} out of range for a {n_layers}-layer backbone")
    if layers is not None and not all(0 <= i <= n_layers for i in layers):
        raise ValueError(f"layers {layers} out of range for a {n_layers}-layer backbone")
    out: dict[str, Encoded] = {}
    store = FeatureCache(cache, teacher, tuple(layers) if layers else n_layers - train_layers,
                         placeholders) if cache else None
    unique = sorted(set(texts), key=len)
    if store:
        for t in unique:
            hit = store.get(t)
            if hit is not None:
                out[t] = hit
        unique = [t for t in unique if t not in out]
    if not unique:
        return out
    decoder = teacher.model.get_decoder() if hasattr(teacher.model, "get_decoder") else teacher.model
    bar = tqdm(total=len(unique), desc="encode", unit="text", disable=not progress)
    for i in range(0, len(unique), batch_size):
        chunk = unique[i:i + batch_size]
        toks = [tokenize_for(teacher.tokenizer, t, placeholders) for t in chunk]
        width = max(1, max(len(ids) for ids, _ in toks))
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (tid, _) in enumerate(toks):  # right padding: a causal model's real tokens never see it
            ids[r, :len(tid)] = torch.from_numpy(tid)
            mask[r, :len(tid)] = 1
        with torch.no_grad():
            states = decoder(input_ids=ids.to(teacher.device), attention_mask=mask.to(teacher.device),
                             output_hidden_states=True, use_cache=False).hidden_states
        hs = torch.stack([states[i] for i in layers], 2) if layers else states[n_layers - train_layers]
        for r, (text, (tid, offsets)) in enumerate(zip(chunk, toks)):
            out[text] = Encoded(tid, offsets, hs[r, :len(tid)].float().cpu().numpy().astype(np.float16))
            if store:
                store.put(text, out[text])
        bar.update(len(chunk))
    bar.close()
    return out
