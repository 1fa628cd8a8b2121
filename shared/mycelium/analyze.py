"""Stage 3, analyze (the map stage): one chunk -> signals, steps, Y labels, problem mapping.

Pure function :func:`analyze` (arrays in, records out) plus :func:`analyze_one`
(store in, store out) which the local process pool and the Lambda handler call.

>>> # analyze(trace, chunk, AnalyzeConfig()) -> (SignalsRecord, [StepRecord, ...])
"""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np

from . import signals as sig
from .artifacts import Embedding, ExpressionRecord, MappedSpan, Operand, SignalsRecord, StepRecord, Trace
from .chunk import Chunk, decode_chunk
from .config import AnalyzeConfig
from .errors import ConfigError
from .expressions import Found, Labelled, find_expressions, label_expressions
from .numwords import Mention, clause_spans, mentions
from .runs import RunKeys
from .spans import tokens_covering
from .store import Store
from .timeseries import boundary_match, heartbeats, peaks, runs_above, smooth, snap

_SENTENCE_START = re.compile(r"(?:^|\n|(?<=[.!?])\s+)(?=\S)")


def _round(x) -> list[float]:
    return [round(float(v), 5) for v in np.asarray(x).ravel()]


def word_starts(text: str, offsets: np.ndarray) -> np.ndarray:
    """[T] bool: token t begins a word (it starts the text, follows whitespace, or begins with it)."""
    space = np.zeros(len(text) + 1, dtype=bool)
    idx = [m.start() for m in re.finditer(r"\s", text)]
    space[idx] = True
    s = offsets[:, 0]
    return (s == 0) | space[np.maximum(s - 1, 0)] | space[s]


def reference_boundaries(cot: str, offsets: np.ndarray, found: list[Found]) -> np.ndarray:
    """Step boundaries implied by the CoT's own arithmetic: the first token of each sentence
    (or line) that holds a computation, except the CoT's first token."""
    if not found:
        return np.array([], np.int64)
    sent_starts = np.unique([0] + [m.end() for m in _SENTENCE_START.finditer(cot)])  # a CoT may start with spaces
    ref_chars = sent_starts[np.searchsorted(sent_starts, [f.start for f in found], side="right") - 1]
    ref = np.unique(np.searchsorted(offsets[:, 1], ref_chars, side="right"))
    return ref[(ref > 0) & (ref < len(offsets))]


def find_boundaries(jsd: np.ndarray, allowed: np.ndarray, cfg: AnalyzeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step boundaries from a JSD trace: Savitzky–Golay smoothing, peaks, snapped to allowed tokens.

    jsd: [T]; allowed: [T] bool (word starts). Returns (boundaries, their prominences, smoothed trace).
    """
    T = len(jsd)
    smoothed = smooth(jsd, cfg.savgol_window, cfg.savgol_polyorder)  # [T]
    spread = float(smoothed.std())
    if spread == 0:
        return np.array([], np.int64), np.array([]), smoothed
    idx, prom = peaks(smoothed, cfg.peak_prominence * spread, cfg.peak_distance)
    snapped = snap(idx, allowed, cfg.snap_tokens)  # [peaks]
    inside = (snapped > 0) & (snapped < T)
    bounds, which = np.unique(snapped[inside], return_inverse=True)
    prom_by_bound = np.zeros(len(bounds))
    np.maximum.at(prom_by_bound, which, prom[inside])  # two peaks snapped together keep the larger
    return bounds, prom_by_bound, smoothed


def _fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _heads(chunk: Chunk, which: str) -> np.ndarray:
    comp = chunk.head_set[chunk.head_set[:, 1] >= 0].astype(np.int64)  # [k, 2]
    if which == "computing" and len(comp):
        return comp
    L, H = chunk.iaf.shape[:2]
    return np.stack(np.meshgrid(np.arange(L), np.arange(H), indexing="ij"), -1).reshape(-1, 2)


def _ground(number: str, step_att: np.ndarray, trace: Trace, ments: list[Mention], prior: list[tuple[Fraction, int]]
            ) -> Operand | None:
    """Where an operand comes from: problem digits, a prior step's result, a number word, or a constant."""
    v = _fraction(number)
    if v is None:
        return None

    def best(cands: list[Mention]) -> Mention:  # the mention this step attended to most
        scores = [step_att[slice(*tokens_covering(trace.problem_offsets, m.start, m.end))].sum() for m in cands]
        return cands[int(np.argmax(scores))]

    digits = [m for m in ments if v in m.values and any(c.isdigit() for c in m.text)]
    if digits:
        m = best(digits)
        return Operand(text=number, source="text", span=(m.start, m.end), span_text=m.text)
    steps = [k for value, k in prior if value == v]
    if steps:
        return Operand(text=number, source="step", step=steps[-1])
    words = [m for m in ments if v in m.values]
    if words:
        m = best(words)
        return Operand(text=number, source="word", span=(m.start, m.end), span_text=m.text)
    return Operand(text=number, source="constant")


def analyze(trace: Trace, chunk: Chunk, cfg: AnalyzeConfig, config_hash: str = "") -> tuple[SignalsRecord, list[StepRecord]]:
    T = trace.t_gen
    L = chunk.iaf.shape[0]
    if T == 0:
        raise ValueError("empty chain of thought")
    if chunk.iaf.shape[-1] != T:
        raise ValueError(f"chunk has {chunk.iaf.shape[-1]} CoT tokens, trace has {T}")
    layers = cfg.layers_for(L)
    if any(not 0 <= l < L for l in layers):
        raise ConfigError(f"jsd_layers {layers} out of range for {L} layers")
    offsets = np.asarray(trace.cot_offsets, dtype=np.int64).reshape(-1, 2)  # [T, 2]

    # boundaries: smoothed JSD peaks, snapped to word starts
    jsd = chunk.jsd[layers].astype(np.float32).mean((0, 1))  # [T]
    bounds, prom_by_bound, smoothed = find_boundaries(jsd, word_starts(trace.cot_text, offsets), cfg)

    # heartbeats on the computing heads' IAF
    heads = _heads(chunk, cfg.iaf_heads)
    iaf_traces = chunk.iaf[heads[:, 0], heads[:, 1]].astype(np.float32)  # [k, T]
    iaf_mean = iaf_traces.mean(0)  # [T]
    _, run_s, run_e = runs_above(iaf_mean, cfg.heartbeat_threshold, cfg.heartbeat_min_run)
    per_head = heartbeats(iaf_traces, cfg.heartbeat_threshold, cfg.heartbeat_min_run)

    # attention over the problem used for mapping
    comp_att = chunk.computing_head_attention()
    att_src = comp_att if cfg.map_heads == "computing" and len(comp_att) else chunk.layer_mean_attention()
    att = att_src.astype(np.float32).mean(0)  # [T, P]
    received = sig.received_attention(att)  # [P]
    att_cum = np.vstack([np.zeros((1, att.shape[1]), np.float32), att.cumsum(0)])  # [T+1, P]
    hid_cum = np.vstack([np.zeros((1, chunk.hidden.shape[1])), chunk.hidden.astype(np.float64).cumsum(0)])  # [T+1, d]

    # the CoT's own arithmetic: expressions, labels, reference boundaries
    found = find_expressions(trace.cot_text, cfg.max_expressions)
    labelled = label_expressions(found, cfg.sandbox_timeout_s)
    expr_tok = np.searchsorted(offsets[:, 1], [f.start for f in found], side="right")  # token of each expression
    ref = reference_boundaries(trace.cot_text, offsets, found)
    tp, fp, fn = boundary_match(bounds, ref, cfg.boundary_tolerance) if found else (0, 0, 0)

    edges = np.concatenate([[0], bounds, [T]]).astype(np.int64)
    step_of_expr = np.clip(np.searchsorted(edges, expr_tok, side="right") - 1, 0, len(edges) - 2)
    ments = mentions(trace.question)
    clauses = clause_spans(trace.question)
    prior: list[tuple[Fraction, int]] = []
    steps: list[StepRecord] = []
    for k in range(len(edges) - 1):  # over steps (a handful), not tokens
        i, j = int(edges[k]), int(edges[k + 1])
        step_att = att_cum[j] - att_cum[i]  # [P]
        records = []
        for f, lab in ((found[e], labelled[e]) for e in np.flatnonzero(step_of_expr == k)):
            records.append(_expression_record(f, lab, step_att, trace, ments, prior))
            for value in (lab.value, f.result_text):
                if value is not None and (fv := _fraction(value)) is not None:
                    prior.append((fv, k))
        labels = sorted({l for r in records if r.ok for l in r.labels})
        reason = None if labels else ("no arithmetic in step" if not records else next(
            (r.reason for r in records if r.reason), "no operations"))
        top = np.argsort(-step_att, kind="stable")[: cfg.map_top_k]
        steps.append(StepRecord(
            problem_id=trace.problem_id, dataset=trace.dataset, index=k, token_start=i, token_end=j,
            char_start=int(offsets[i, 0]), char_end=int(offsets[j - 1, 1]),
            text=trace.cot_text[offsets[i, 0]:offsets[j - 1, 1]], expressions=records, labels=labels,
            unlabelled_reason=reason, top_tokens=[(int(t), round(float(step_att[t]), 5)) for t in top],
            mapped_spans=_clauses_of(top, step_att, trace, clauses),
            embedding=Embedding.from_array((hid_cum[j] - hid_cum[i]) / max(1, j - i)), config_hash=config_hash,
        ))
    record = SignalsRecord(
        problem_id=trace.problem_id, dataset=trace.dataset, level=trace.level, subject=trace.subject, t_gen=T,
        jsd_layers=layers, jsd=_round(jsd), jsd_smoothed=_round(smoothed), boundaries=[int(b) for b in bounds],
        boundary_prominences=_round(prom_by_bound), iaf_heads=[tuple(map(int, h)) for h in heads],
        iaf=_round(iaf_mean), heartbeats=len(run_s), heartbeat_runs=[(int(a), int(b)) for a, b in zip(run_s, run_e)],
        heartbeats_per_head=[int(c) for c in np.atleast_1d(per_head)], received_attention=_round(received),
        reference_boundaries=[int(r) for r in ref], boundary_tp=tp, boundary_fp=fp, boundary_fn=fn,
        n_steps=len(steps), n_expressions=len(found), n_parsed=sum(1 for l in labelled if l.ok),
        label_counts={l: sum(l in s.labels for s in steps) for l in sorted({l for s in steps for l in s.labels})},
        config_hash=config_hash, config=cfg.model_dump(mode="json", exclude={"progress", "workers"}),
    )
    return record, steps


def _expression_record(f: Found, lab: Labelled, step_att, trace, ments, prior) -> ExpressionRecord:
    operands = []
    if lab.ok:
        numbers = [n for n in lab.numbers if not (f.kind == "latex" and n == "-1")]
        operands = [op for n in numbers if (op := _ground(n, step_att, trace, ments, prior)) is not None]
    matches = None
    if lab.value is not None and f.result_text is not None:
        a, b = _fraction(lab.value), _fraction(f.result_text)
        # exact arithmetic: huge values (2^1100) must not overflow a float; written results may be rounded
        matches = None if a is None or b is None else abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))
    return ExpressionRecord(kind=f.kind, text=f.text, char_start=f.start, char_end=f.end, result_text=f.result_text,
                            ok=lab.ok, reason=lab.reason, sympy=lab.sympy, labels=list(lab.labels), value=lab.value,
                            value_matches_result=matches, operands=operands)


def _clauses_of(top: np.ndarray, step_att: np.ndarray, trace: Trace, clauses: list[tuple[int, int]]) -> list[MappedSpan]:
    """Expand the most-attended problem tokens to the clauses that hold them."""
    if not clauses or not len(step_att):
        return []
    starts = np.array([c[0] for c in clauses])
    best: dict[int, float] = {}
    for t in top:
        s = trace.problem_offsets[int(t)][0]
        c = int(np.searchsorted(starts, s, side="right") - 1)
        if c >= 0:
            best[c] = max(best.get(c, 0.0), float(step_att[t]))
    return [MappedSpan(start=clauses[c][0], end=clauses[c][1], text=trace.question[clauses[c][0]:clauses[c][1]],
                       score=round(score, 5)) for c, score in sorted(best.items())]


def output_keys(keys: RunKeys, pid: str) -> tuple[str, str]:
    return keys("steps", f"{pid}.jsonl"), keys("signals", f"{pid}.json")


def is_done(store: Store, keys: RunKeys, pid: str, cfg: AnalyzeConfig) -> bool:
    """The chunk's signals exist and were made with this config (else it is analysed again)."""
    key = output_keys(keys, pid)[1]
    return store.exists(key) and store.get_json(key).get("config_hash") == cfg.hash()


def analyze_one(store: Store, run: str, pid: str, cfg: AnalyzeConfig) -> dict:
    """Read one chunk + trace, analyze, write steps then signals (the commit marker). Small summary back."""
    keys = RunKeys(run)
    steps_key, signals_key = output_keys(keys, pid)
    trace = Trace.model_validate(store.get_json(keys.trace(pid)))
    chunk = decode_chunk(store.get(keys.chunk(pid)), keys.chunk(pid))
    record, steps = analyze(trace, chunk, cfg, cfg.hash())
    store.put(steps_key, "".join(s.model_dump_json() + "\n" for s in steps).encode())
    store.put_json(signals_key, record.model_dump(mode="json"))
    return {"problem_id": pid, "steps": len(steps), "expressions": record.n_expressions, "parsed": record.n_parsed,
            "heartbeats": record.heartbeats, "boundaries": len(record.boundaries), "level": record.level,
            "boundary_tp": record.boundary_tp, "boundary_fp": record.boundary_fp, "boundary_fn": record.boundary_fn,
            "dataset": record.dataset, "steps_key": steps_key, "signals_key": signals_key}
