"""Why each wrong answer is wrong, and how much each component could still buy (the oracle ladder).

Both need the teacher's labels for the evaluation problems. They are made the way the training labels were —
the teacher reads the problem's reference solution (``mycelium capture --cot reference``, then ``analyze``,
into a run of its own), and the program is built with the *training* run's templates and label config — and
they are used here only: the solver never sees them.

**Attribution** walks the components in the order of the seeds' framework and blames the first whose output
disagrees with the teacher's label on what the answer needed. One exception to the order: "the right value
was computed but not returned" is checked before the program's shape (a program that goes on past the right
value differs from the teacher's in shape too, but its error is where it stopped):

========================  =================================================================================
TEACHER                   no validated teacher program for the problem (the pipeline itself failed here)
C1 segmentation           an operand of the teacher's program lies outside the text C1 marked as read
C2 classification         C2 is flat (the solver abstained), or a template the teacher's program uses is < 0.5
C4 roles                  C4 calls an operand of the teacher's program unused, or the question
C6 selection              the right value was computed by some node but another was returned
C3 extraction             the program reads other numbers, or applies other operations, than the teacher's
C5 dependency             same numbers and operations, wired differently (which node reads which)
execution                 the program is the teacher's, yet the answer is wrong
abstained                 the search found no program that computes (within its budget)
========================  =================================================================================

Every component's disagreements are also counted without the first-blame rule.

**The oracle ladder** re-runs the search with the teacher's labels in place of the students' outputs,
cumulatively: C2's gate, C3's node count, its shapes, its operands from the text, C5's wiring (operands
that are earlier nodes), C6's format. Each step's gain is that component's headroom; the top is bounded by
the share of problems with a teacher program the students' vocabulary can express.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from ..core.keys import RunKeys
from ..core.lineage import read_commit, read_record, verified_bytes
from ..core.store import jsonl
from ..programs.execute import same_value
from ..records.analysis import SignalsRecord, StepRecord
from ..records.programs import Program
from ..solver.search import Decisions
from ..students.data import IGNORE, pad_pointers, program_targets

CATEGORIES = ("TEACHER", "C1 segmentation", "C2 classification", "C4 roles", "C6 selection", "C3 extraction",
              "C5 dependency", "execution", "abstained")
LADDER = ("students", "+ C2 gate", "+ C3 node count", "+ C3 shapes", "+ C3 operands from the text",
          "+ C5 wiring", "+ C6 format")


def teacher_programs(store, labels_run: str, train_run: str, problems: list, progress: bool = False) -> dict:
    """problem id -> the teacher's Program for it, or the reason there is none. ``labels_run``: the evaluation
    problems captured with their reference solutions and analysed; ``train_run``: the students' training run,
    whose templates (discover) and label config make the programs exactly as training's were made."""
    from tqdm import tqdm

    from ..core.config import LabelConfig
    from ..core.keys import RUN_ITEM
    from ..programs.build import Rejected, build_program
    from ..templates.assign import TemplateIndex

    train, labels = RunKeys(train_run), RunKeys(labels_run)
    discover = read_commit(store, train, "discover", RUN_ITEM)
    if discover is None:
        raise FileNotFoundError(f"run {train_run!r}: no templates (discover) to label the evaluation problems with")
    templates = TemplateIndex.from_bytes(verified_bytes(store, discover, train("ib", "templates.npz")))
    cfg = LabelConfig(**{**read_record(store, train, "label").config, "augment": 0, "progress": False})
    out: dict[str, Program | str] = {}
    for p in tqdm(problems, desc="teacher programs", unit="problem", disable=not progress):
        commit = read_commit(store, labels, "analyze", p.id)
        if commit is None:
            out[p.id] = f"not analysed in run {labels_run!r}"
            continue
        signals = SignalsRecord.model_validate_json(verified_bytes(store, commit, labels.signals(p.id)))
        steps = [StepRecord.model_validate_json(line) for line in jsonl(verified_bytes(store, commit, labels.steps(p.id)))]
        try:
            out[p.id] = build_program(p, steps, signals, cfg, templates)
        except Rejected as r:
            out[p.id] = r.reason
    return out


def _signature(nodes) -> tuple[Counter, Counter, list]:
    """(numbers read from the text, operations, wiring) of a program: ``nodes`` as (canonical, operand refs)."""
    from ..students.data import shape_of

    texts = Counter(r for _, refs in nodes for r in refs if r.startswith("text:") or r.startswith("const:"))
    shapes = Counter(shape_of(c) for c, _ in nodes)
    return texts, shapes, [(shape_of(c), tuple(refs)) for c, refs in nodes]


def _solver_nodes(program: list[dict]) -> list[tuple[str, list[str]]]:
    out = []
    for node in program:
        refs = [f"text:{o['span'][0]}-{o['span'][1]}" if "span" in o else f"node:{o['node']}" if "node" in o
                else f"const:{float(o['const'])}" for o in node["operands"]]
        out.append((node["canonical"], refs))
    return out


def _teacher_nodes(program: Program) -> list[tuple[str, list[str]]]:
    refs = lambda n: [f"const:{float(p.value)}" if p.kind == "const" else p.ref for p in n.operands]  # noqa: E731
    return [(n.canonical, refs(n)) for n in program.nodes]


def disagreements(solution, program: Program, correct: bool) -> list[str]:
    """The components whose output disagrees with the teacher's labels, in the framework's order."""
    trace, found = solution.trace, []
    used = [p.span for n in program.nodes for p in n.operands if p.kind == "text"]
    read = trace.get("C1", {}).get("spans", [])
    if any(not any(a <= s and e <= b for a, b in read) for s, e in used):
        found.append("C1 segmentation")
    teacher_templates = {n.template or "untemplated" for n in program.nodes}
    probs = trace.get("C2", {}).get("templates", {})
    if (solution.abstained and "C2" in (solution.reason or "")) or any(probs.get(t, 0) < 0.5 for t in teacher_templates):
        found.append("C2 classification")
    roles = {tuple(m["span"]): m["role"] for m in trace.get("C4", {}).get("mentions", [])}
    if any(roles.get(tuple(s), "operand") != "operand" for s in used):
        found.append("C4 roles")
    if not solution.program:
        return found
    if not correct and any(same_value(n.get("value"), program.answer) for n in solution.program[:-1]):
        # checked before the program's shape: the nodes up to the right value were right, the stop was not
        found.append("C6 selection")
    mine, theirs = _signature(_solver_nodes(solution.program)), _signature(_teacher_nodes(program))
    if mine[0] != theirs[0] or mine[1] != theirs[1]:
        found.append("C3 extraction")
    elif mine[2] != theirs[2]:
        found.append("C5 dependency")
    return found


def attribute(solution, teacher, correct: bool) -> tuple[str | None, list[str]]:
    """(the category blamed, or None when the answer is right; every disagreement). ``teacher``: the problem's
    Program or the reason it has none."""
    if not isinstance(teacher, Program):
        return (None if correct else "TEACHER"), []
    found = disagreements(solution, teacher, correct)
    if correct:
        return None, found
    if found:
        return found[0], found
    return ("abstained" if solution.abstained else "execution"), found


def oracle(d: Decisions, y: dict, level: int, n_mentions: int) -> Decisions:
    """``d`` with the teacher's choices (``y``: ``students.data.program_targets``) for ladder rungs 2..5
    (count, shapes, operands from the text or constants, operands that are earlier nodes)."""
    def one_hot(logp: np.ndarray, i: int) -> np.ndarray:
        out = np.full_like(logp, -np.inf)
        out[i] = 0.0
        return out

    count, shapes, pointers = d.count.copy(), d.shapes.copy(), d.pointers.copy()
    n = int(y["n_nodes"])
    if level >= 2:
        count = one_hot(count, n)
    for k in range(min(n, shapes.shape[0])):
        if level >= 3 and y["shape"][k] != IGNORE:
            shapes[k] = one_hot(shapes[k], int(y["shape"][k]))
        for j, cls in enumerate(y["pointers"][k]):
            cls = int(cls)
            is_node = n_mentions <= cls < n_mentions + d.max_nodes
            if cls != IGNORE and ((level >= 4 and not is_node) or (level >= 5 and is_node)):
                pointers[k, j] = one_hot(pointers[k, j], cls)
    return replace(d, count=count, shapes=shapes, pointers=pointers)


def ladder(solver, reading, program: Program, students) -> list:
    """The solver's answer at every rung above the students' own (``students``, rung 0): rungs 1..6."""
    from ..programs.examples import answer_format, targets

    y = program_targets(reading.question.text, targets(program)["C3"].model_dump(), solver.vocab)
    M = reading.decisions.n_mentions  # C3 pads a problem without mentions to one slot, as in training
    y["pointers"] = pad_pointers(y["pointers"], len(reading.spans), M)
    gated = students.abstained and "C2" in (students.reason or "")
    out = [solver.answer(reading, gate=False) if gated else students]
    for level in range(2, len(LADDER)):
        d = oracle(reading.decisions, y, level, M)
        out.append(solver.answer(reading, decisions=d, fmt=answer_format(program.answer) if level >= 6 else None,
                                 gate=False))
    return out
