"""``mycelium show``: one analysed problem, for people.

Terminal: the problem with each step's mapped clauses coloured by the step that
read them most, then every step with its expressions, labels and operand sources.
HTML (``show/<pid>.html``): each step's own highlights. PNG (``show/<pid>.png``):
the IAF and JSD traces over CoT tokens with boundaries and heartbeats marked.
"""

from __future__ import annotations

import html
import sys

import numpy as np

from ..core.errors import MyceliumError
from ..core.keys import RunKeys
from ..core.lineage import read_commit
from ..core.store import Store, jsonl
from ..records.analysis import SignalsRecord, StepRecord
from ..records.capture import Trace
from ..records.programs import LabelRecord
from .plots import png, pyplot

_PALETTE = ["#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd"]
_ANSI = [159, 229, 183, 210, 117, 215, 150, 218, 252, 176]


def load(store: Store, run: str, pid: str) -> tuple[Trace, SignalsRecord, list[StepRecord]]:
    keys = RunKeys(run)
    if read_commit(store, keys, "analyze", pid) is None:
        raise MyceliumError(f"run {run!r}: problem {pid!r} is not analysed (no {keys.commit('analyze', pid)}); "
                            f"run `mycelium analyze --run {run}`")
    trace = Trace.model_validate_json(store.get(keys.trace(pid)))
    rec = SignalsRecord.model_validate_json(store.get(keys.signals(pid)))
    steps = [StepRecord.model_validate_json(line) for line in jsonl(store.get(keys.steps(pid)))]
    return trace, rec, steps


def _owner(question: str, steps: list[StepRecord]) -> np.ndarray:
    """[chars] index of the step that attended most to each character's clause (-1: none)."""
    best = np.full(len(question), -1.0)
    owner = np.full(len(question), -1)
    for s in steps:
        for span in s.mapped_spans:
            sl = slice(span.start, span.end)
            better = span.score > best[sl]
            owner[sl] = np.where(better, s.index, owner[sl])
            best[sl] = np.where(better, span.score, best[sl])
    return owner


def _runs(owner: np.ndarray):
    """(start, end, owner) of maximal runs of equal owner."""
    if not len(owner):
        return
    cuts = np.flatnonzero(np.diff(owner)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(owner)]])
    yield from zip(starts.tolist(), ends.tolist(), owner[starts].tolist())


def _describe(step: StepRecord) -> list[str]:
    lines = []
    for e in step.expressions:
        if not e.ok:
            lines.append(f"    {e.kind}: {e.text!r} unparsed ({e.reason})")
            continue
        ops = ", ".join(_operand(o) for o in e.operands)
        lines.append(f"    {e.kind}: {e.sympy} = {e.value}  labels {e.labels}  operands: {ops}")
    return lines


def _operand(o) -> str:
    where = (f"[{o.span_text}]" if o.span_text else f"[step {o.step}]" if o.step is not None
             else f"[expression {o.expression}]" if o.expression is not None else "")
    doubt = f" (ambiguous, read the problem {o.problem_attention:.2f})" if o.ambiguous else ""
    return f"{o.text}←{o.source}{where}{doubt}"


def render_terminal(trace: Trace, rec: SignalsRecord, steps: list[StepRecord], colour: bool) -> str:
    q = trace.question
    parts = []
    for s, e, o in _runs(_owner(q, steps)):
        seg = q[s:e]
        if o < 0:
            parts.append(seg)
        elif colour:
            parts.append(f"\x1b[48;5;{_ANSI[o % len(_ANSI)]}m{seg}\x1b[0m\x1b[2m[{o}]\x1b[0m")
        else:
            parts.append(f"[{seg}]{{{o}}}")
    out = [f"problem {trace.problem_id} ({trace.dataset}{f', level {trace.level}' if trace.level else ''}): "
           f"{rec.n_steps} steps, {rec.heartbeats} heartbeats, {len(rec.boundaries)} boundaries", "".join(parts), ""]
    for s in steps:
        tag = f"\x1b[48;5;{_ANSI[s.index % len(_ANSI)]}m step {s.index} \x1b[0m" if colour else f"step {s.index}"
        spans = "; ".join(f"{m.text!r} ({m.score:.2f})" for m in s.mapped_spans)
        out.append(f"{tag} tokens {s.token_start}-{s.token_end}: {s.text.strip()!r}  labels {s.labels or '-'}")
        out.append(f"    reads: {spans}")
        out.extend(_describe(s))
    return "\n".join(out)


def render_html(trace: Trace, rec: SignalsRecord, steps: list[StepRecord]) -> str:
    def marked(step: StepRecord) -> str:
        q, pos, parts = trace.question, 0, []
        for m in sorted(step.mapped_spans, key=lambda m: m.start):
            if m.start < pos:
                continue
            colour = _PALETTE[step.index % len(_PALETTE)]
            parts += [html.escape(q[pos:m.start]),
                      f'<mark style="background:{colour}" title="attention {m.score:.3f}">{html.escape(q[m.start:m.end])}</mark>']
            pos = m.end
        return "".join(parts) + html.escape(q[pos:])

    rows = []
    for s in steps:
        exprs = "<br>".join(html.escape(line.strip()) for line in _describe(s)) or "—"
        rows.append(f"<tr><td>{s.index}</td><td><code>{html.escape(s.text)}</code></td><td>{', '.join(s.labels) or '—'}</td>"
                    f"<td>{marked(s)}</td><td>{exprs}</td></tr>")
    return (f"<!doctype html><meta charset=utf-8><title>{trace.problem_id}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:4px 8px;border-bottom:1px solid #ddd}"
            "code{white-space:pre-wrap}</style>"
            f"<h1>{trace.problem_id}</h1><p>{html.escape(trace.question)}</p>"
            f"<p>{rec.n_steps} steps · {rec.heartbeats} heartbeats · boundaries {rec.boundaries} · "
            f"reference {rec.reference_boundaries}</p>"
            "<table><tr><th>step</th><th>CoT text</th><th>labels</th><th>problem text it read</th><th>expressions</th></tr>"
            + "".join(rows) + "</table>")


def traces_png(trace: Trace, rec: SignalsRecord) -> bytes:
    t = np.arange(rec.t_gen)
    fig, (a1, a2) = pyplot().subplots(2, 1, figsize=(max(8, rec.t_gen * 0.09), 6), sharex=True)
    a1.plot(t, rec.iaf, color="tab:blue", alpha=0.5, label=f"IAF, mean of {len(rec.iaf_heads)} heads")
    a1.plot(t, rec.iaf_over_chance, color="tab:purple", label="IAF above chance (heartbeats)"
            if rec.heartbeat_signal == "iaf_over_chance" else "IAF above chance")
    a1.axhline(rec.config["heartbeat_threshold"], color="grey", ls=":", lw=1)
    for s, e in rec.heartbeat_runs:
        a1.axvspan(s - 0.5, e - 0.5, color="tab:orange", alpha=0.25)
    a1.set_ylabel("IAF")
    a1.set_title(f"{trace.problem_id}: {rec.heartbeats} heartbeats (shaded), {len(rec.boundaries)} JSD boundaries")
    a1.legend(loc="upper right", fontsize=8)
    a2.plot(t, rec.jsd, color="lightgrey", label="JSD")
    a2.plot(t, rec.jsd_smoothed, color="tab:green", label="JSD, Savitzky–Golay")
    for b in rec.boundaries:
        a1.axvline(b - 0.5, color="tab:red", lw=0.8)
        a2.axvline(b - 0.5, color="tab:red", lw=0.8)
    if rec.reference_boundaries:
        a2.plot(rec.reference_boundaries, np.full(len(rec.reference_boundaries), max(rec.jsd_smoothed or [0])),
                "kv", label="reference (where each calculation starts)")
    a2.set_ylabel("JSD (nats)")
    labels = [trace.cot_text[s:e].replace("\n", "⏎") for s, e in trace.cot_offsets]
    a2.set_xticks(t, labels, rotation=90, fontsize=6)
    a2.legend(loc="upper right", fontsize=8)
    return png(fig, dpi=100)


def render_program(label: LabelRecord) -> str:
    """The program over the problem text: each quantity marked where it is read, then each node."""
    if not label.kept:
        return f"no program: {label.reason}" + (f" ({label.detail})" if label.detail else "")
    p = label.program
    marks = sorted({(o.span[0], o.span[1], o.name) for n in p.nodes for o in n.operands if o.kind == "text"})
    text, pos = [], 0
    for s, e, name in marks:
        text += [p.question[pos:s], f"[{p.question[s:e]}]{name}"]
        pos = e
    lines = ["program: " + "".join(text) + p.question[pos:]]
    for n in p.nodes:
        reads = ", ".join(f"{o.name}={o.span_text!r}@{o.span[0]}-{o.span[1]}" if o.kind == "text"
                          else f"r{o.node}" if o.kind == "node" else f"const {o.value}" for o in n.operands)
        arrow = " ⇒ answer" if n.index == p.answer_node else ""
        lines.append(f"  r{n.index} = {n.canonical} = {n.value}   [{n.template}, step {n.step}]   reads {reads}{arrow}")
    lines.append(f"  answer {p.answer}; {len(label.variants)} augmented variant(s)" + (f", {p.pruned} node(s) pruned"
                                                                                      if p.pruned else ""))
    return "\n".join(lines)


def load_label(store: Store, run: str, pid: str) -> LabelRecord | None:
    """The problem's label record when the label stage committed one."""
    keys = RunKeys(run)
    if read_commit(store, keys, "label", pid) is None:
        return None
    return LabelRecord.model_validate_json(store.get(keys.label(pid)))


def show(store: Store, run: str, pid: str, out=None, colour: bool | None = None) -> tuple[str, str]:
    """Print the terminal view (and the program, once labelled); write the HTML and PNG; return their keys."""
    out = out or sys.stdout  # at call time: a default bound at import would outlive a redirected stdout
    trace, rec, steps = load(store, run, pid)
    keys = RunKeys(run)
    print(render_terminal(trace, rec, steps, out.isatty() if colour is None else colour), file=out)
    label = load_label(store, run, pid)
    if label is not None:
        print(render_program(label), file=out)
    html_key, png_key = keys("show", f"{pid}.html"), keys("show", f"{pid}.png")
    page = render_html(trace, rec, steps)
    if label is not None:
        page += f"<h2>Program</h2><pre>{html.escape(render_program(label))}</pre>"
    store.put(html_key, page.encode())
    store.put(png_key, traces_png(trace, rec))
    for key in (html_key, png_key):
        print(f"wrote {store.local_path(key) or f'{store.url}/{key}'}", file=out)
    return html_key, png_key
