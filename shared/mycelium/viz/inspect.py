"""``mycelium inspect``: look at one captured problem.

Prints the CoT with every token boundary marked, and writes a PNG heat map of
the chunk's generation-phase attention over the problem tokens.
"""

from __future__ import annotations

import sys

import numpy as np

from ..core.errors import MissingKeyError, MyceliumError
from ..core.keys import RunKeys
from ..core.store import Store
from ..records.capture import Trace
from ..records.chunk import Chunk, decode_chunk
from .plots import png, pyplot

_COLOURS = ("\x1b[48;5;153m", "\x1b[48;5;223m")
_RESET = "\x1b[0m"


def load(store: Store, run: str, pid: str) -> tuple[Trace, Chunk]:
    keys = RunKeys(run)
    try:
        trace = Trace.model_validate(store.get_json(keys.trace(pid)))
        chunk = decode_chunk(store.get(keys.chunk(pid)), keys.chunk(pid))
    except MissingKeyError as e:
        raise MyceliumError(f"run {run!r} has no captured problem {pid!r} ({e})") from None
    return trace, chunk


def token_pieces(text: str, offsets: list[tuple[int, int]]) -> list[str]:
    """The exact text of each token, from its character offsets."""
    return [text[s:e] for s, e in offsets]


def render_tokens(text: str, offsets: list[tuple[int, int]], colour: bool) -> str:
    pieces = token_pieces(text, offsets)
    if colour:
        return "".join(f"{_COLOURS[i % 2]}{p}{_RESET}" for i, p in enumerate(pieces))
    return "|".join(pieces)


def heatmap_png(trace: Trace, chunk: Chunk, problem_text: str) -> bytes:
    """[T, P] heat maps: mean over layers of the head-mean attention, and the computing heads' mean."""
    panels = [("mean over layers (head mean)", chunk.layer_mean_attention().astype(np.float32).mean(0))]
    comp = chunk.computing_head_attention()
    if len(comp):
        panels.append((f"computing heads ({len(comp)})", comp.astype(np.float32).mean(0)))
    x_labels = [problem_text[s:e].strip() or "·" for s, e in trace.problem_offsets]
    y_labels = [trace.cot_text[s:e].replace("\n", "⏎").strip() or "·" for s, e in trace.cot_offsets]
    T, P = panels[0][1].shape
    fig, axes = pyplot().subplots(1, len(panels), figsize=(min(40, 2 + 0.18 * P) * len(panels), min(80, 2 + 0.16 * T)),
                             squeeze=False)
    for ax, (title, m) in zip(axes[0], panels):
        im = ax.imshow(m, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_title(f"{trace.problem_id}: {title}", fontsize=9)
        ax.set_xticks(range(P), x_labels, rotation=90, fontsize=6)
        ax.set_yticks(range(T), y_labels, fontsize=5)
        ax.set_xlabel("problem token")
        ax.set_ylabel("CoT token (generation phase)")
        fig.colorbar(im, ax=ax, fraction=0.03, label="attention share (sinks removed)")
    return png(fig)


def inspect(store: Store, run: str, pid: str, out=None, colour: bool | None = None) -> str:
    """Print the CoT with token boundaries; write the heat map; return its store key."""
    out = out or sys.stdout  # at call time, not import time
    trace, chunk = load(store, run, pid)
    keys = RunKeys(run)
    question = trace.question
    colour = out.isatty() if colour is None else colour
    print(f"problem {pid} ({trace.model_id}, CoT: {trace.cot_source}, {trace.t_gen} tokens, prompt {trace.prompt_len})",
          file=out)
    print("problem tokens:", render_tokens(question, trace.problem_offsets, colour), file=out)
    print("CoT tokens:", file=out)
    print(render_tokens(trace.cot_text, trace.cot_offsets, colour), file=out)
    print(f"answer extracted: {trace.answer_extracted!r}  correct: {trace.correct}", file=out)
    key = keys("inspect", f"{pid}.png")
    store.put(key, heatmap_png(trace, chunk, question))
    where = store.local_path(key) or f"{store.url}/{key}"
    print(f"heat map: {where}", file=out)
    return key
