"""Analyze one problem: its trace and chunk -> signals, steps, Y labels, problem mapping. Pure: no store.

The analyze stage (``mycelium.stages.analyze``) reads the inputs, calls :func:`analyze`, and writes
the records; the same call runs in the local process pool and in the Lambda handler.
"""

from __future__ import annotations

import numpy as np

from ..core.config import AnalyzeConfig
from ..core.errors import ConfigError
from ..mathlang.expressions import find_expressions, label_expressions
from ..records.analysis import Embedding, SignalsRecord, StepRecord
from ..records.capture import Trace
from ..records.chunk import Chunk
from . import signals as sig
from .boundaries import boundary_match, calculation_starts, find_boundaries, segment
from .grounding import Grounding, as_fraction, expression_record, map_clauses
from .numwords import mentions
from .text import clause_spans, word_starts
from .timeseries import heartbeats, runs_above


def _round(x) -> list[float]:
    return [round(float(v), 5) for v in np.asarray(x).ravel()]


def _heads(chunk: Chunk, which: str) -> np.ndarray:
    comp = chunk.head_set[chunk.head_set[:, 1] >= 0].astype(np.int64)  # [k, 2]
    if which == "computing" and len(comp):
        return comp
    L, H = chunk.iaf.shape[:2]
    return np.stack(np.meshgrid(np.arange(L), np.arange(H), indexing="ij"), -1).reshape(-1, 2)


def analyze(trace: Trace, chunk: Chunk, cfg: AnalyzeConfig) -> tuple[SignalsRecord, list[StepRecord]]:
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

    # boundaries: smoothed JSD peaks snapped to word starts, or the segmentation the config names
    jsd = chunk.jsd[layers].astype(np.float32).mean((0, 1))  # [T]
    jsd_bounds, jsd_prom, smoothed = find_boundaries(jsd, word_starts(trace.cot_text, offsets), cfg)
    bounds = segment(cfg.segmentation, jsd_bounds, smoothed, trace.cot_text, offsets, cfg.snap_tokens)
    # each boundary's strength: its JSD peak's prominence, else the smoothed JSD where it is
    prom_by_bound = jsd_prom if cfg.segmentation == "jsd" else smoothed[bounds]

    # heartbeats on the computing heads' IAF, above what an even spread over the visible keys would give
    heads = _heads(chunk, cfg.iaf_heads)
    iaf_traces = chunk.iaf[heads[:, 0], heads[:, 1]].astype(np.float32)  # [k, T]
    iaf_mean = iaf_traces.mean(0)  # [T]
    chance = sig.chance_iaf(len(trace.problem_offsets), sig.visible_prompt_keys(chunk.meta), T)  # [T]
    above = sig.iaf_over_chance(iaf_mean, chance, cfg.heartbeat_min_room)  # [T]
    beat, beat_heads = (above, sig.iaf_over_chance(iaf_traces, chance, cfg.heartbeat_min_room)) \
        if cfg.heartbeat_signal == "iaf_over_chance" \
        else (iaf_mean, iaf_traces)
    _, run_s, run_e = runs_above(beat, cfg.heartbeat_threshold, cfg.heartbeat_min_run)
    per_head = heartbeats(beat_heads, cfg.heartbeat_threshold, cfg.heartbeat_min_run)

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
    ref = calculation_starts(trace.cot_text, offsets, found)
    tp, fp, fn = boundary_match(bounds, ref, cfg.boundary_tolerance) if found else (0, 0, 0)

    edges = np.concatenate([[0], bounds, [T]]).astype(np.int64)
    step_of_expr = np.clip(np.searchsorted(edges, expr_tok, side="right") - 1, 0, len(edges) - 2)
    clauses = clause_spans(trace.question)
    g = Grounding(trace, mentions(trace.question), above, offsets, cfg.grounding_threshold)
    steps: list[StepRecord] = []
    for k in range(len(edges) - 1):  # over steps (a handful), not tokens
        i, j = int(edges[k]), int(edges[k + 1])
        step_att = att_cum[j] - att_cum[i]  # [P]
        records = []
        for e in np.flatnonzero(step_of_expr == k):
            f, lab = found[e], labelled[e]
            records.append(expression_record(f, lab, k, step_att, g))
            # available to the expressions after this one: what it computes, and what the CoT writes it equals
            # unless the two disagree (then a later operand must not point here on the written value)
            consistent = records[-1].value_matches_result is not False
            for value in (lab.value, f.result_text if consistent else None):
                if value is not None and (fv := as_fraction(value)) is not None:
                    g.results.append((fv, k, int(e)))
        labels = sorted({l for r in records if r.ok for l in r.labels})
        reason = None if labels else ("no arithmetic in step" if not records else next(
            (r.reason for r in records if r.reason), "no operations"))
        top = np.argsort(-step_att, kind="stable")[: cfg.map_top_k]
        steps.append(StepRecord(
            problem_id=trace.problem_id, dataset=trace.dataset, index=k, token_start=i, token_end=j,
            char_start=int(offsets[i, 0]), char_end=int(offsets[j - 1, 1]),
            text=trace.cot_text[offsets[i, 0]:offsets[j - 1, 1]], expressions=records, labels=labels,
            unlabelled_reason=reason, top_tokens=[(int(t), round(float(step_att[t]), 5)) for t in top],
            mapped_spans=map_clauses(top, step_att, trace, clauses),
            embedding=Embedding.from_array((hid_cum[j] - hid_cum[i]) / max(1, j - i)),
        ))
    record = SignalsRecord(
        problem_id=trace.problem_id, dataset=trace.dataset, level=trace.level, subject=trace.subject, t_gen=T,
        jsd_layers=layers, jsd=_round(jsd), jsd_smoothed=_round(smoothed), segmentation=cfg.segmentation,
        boundaries=[int(b) for b in bounds], jsd_boundaries=[int(b) for b in jsd_bounds],
        boundary_prominences=_round(prom_by_bound), iaf_heads=[tuple(map(int, h)) for h in heads],
        iaf=_round(iaf_mean), iaf_over_chance=_round(above), heartbeat_signal=cfg.heartbeat_signal, heartbeats=len(run_s), heartbeat_runs=[(int(a), int(b)) for a, b in zip(run_s, run_e)],
        heartbeats_per_head=[int(c) for c in np.atleast_1d(per_head)], received_attention=_round(received),
        reference_boundaries=[int(r) for r in ref], boundary_tp=tp, boundary_fp=fp, boundary_fn=fn,
        n_steps=len(steps), n_expressions=len(found), n_parsed=sum(1 for l in labelled if l.ok),
        label_counts={l: sum(l in s.labels for s in steps) for l in sorted({l for s in steps for l in s.labels})},
        config=cfg.model_dump(mode="json", exclude={"progress", "workers"}),
    )
    return record, steps
