"""The reader's solver: problem text in, answer and trace out, from the step decoder's beam and exact arithmetic.

``ReaderSolver.solve`` takes a :class:`~mycelium.solver.solve.Question` (an id and the text, no answer field)
and always returns a :class:`~mycelium.solver.solve.Solution`: an answer, or an abstention with its reason,
whatever the text (no number in it, thousands of characters, hundreds of numbers, a 400-digit number).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..programs.steps import OPS, as_text
from .beam import beam_search
from .solve import Question, Solution


@dataclass
class ReaderOptions:
    width: int = 10  # beam width
    vote: bool = False  # True: the value with the most pooled probability; False: the most probable program


def reader_dir(models: Path) -> Path | None:
    """Where a models directory keeps its reader (``<models>/reader`` or the directory itself), if it has one."""
    for d in (Path(models) / "reader", Path(models)):
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file() and \
                '"layers"' in (d / "config.json").read_text():
            return d
    return None


class ReaderSolver:
    def __init__(self, path: Path, teacher, options: ReaderOptions | None = None):
        from ..students.reader_train import load

        self.teacher, self.options = teacher, options or ReaderOptions()
        self.model = load(path, teacher)
        self.cfg = self.model.cfg

    def solve(self, question: Question) -> Solution:
        if not isinstance(question, Question):
            raise TypeError(f"the solver reads a Question (id, text), not {type(question).__name__}")
        from ..students.encode import frozen_features
        from ..students.reader import collate, make_item

        t0 = time.perf_counter()
        text = question.text
        enc = frozen_features(self.teacher, [text], 0, progress=False, layers=tuple(self.cfg.stored_layers()))[text]
        item = make_item(text, enc, self.cfg)
        done = lambda **kw: Solution(id=question.id, ms=(time.perf_counter() - t0) * 1000, **kw)  # noqa: E731
        trace = {"mentions": sum(1 for c in item.cand if c.mention is not None and c.reading == 0),
                 "mentions_left_out": item.truncated}
        if not any(c.mention is not None for c in item.cand):
            return done(answer=None, abstained=True, reason="no number in the problem", confidence=0.0, trace=trace)
        result = beam_search(self.model, collate([item], self.cfg), [c.value for c in item.cand], None,
                             width=self.options.width)
        trace |= {"format": result.fmt, "pruned": result.pruned, "rounds": result.rounds,
                  "beam": [{"value": str(f.value), "p": round(math.exp(f.logp), 4), "mass": round(f.mass, 4),
                            "program": self._nodes(f, item, text)} for f in result.finished[:self.options.width]]}
        if not result.finished:
            return done(answer=None, abstained=True, reason="no program in the beam computes an answer of format "
                        f"{result.fmt}", confidence=0.0, trace=trace)
        best = max(result.finished, key=lambda f: f.mass) if self.options.vote else result.finished[0]
        return done(answer=as_text(best.value), abstained=False, reason=None,
                    confidence=best.mass if self.options.vote else math.exp(best.logp),
                    program=self._nodes(best, item, text), nodes_expanded=result.rounds,
                    programs_tried=len(result.finished), trace=trace)

    def _nodes(self, f, item, text: str) -> list[dict]:
        """The program as the trace shows it: each step's canonical form, operands and value."""
        C = len(item.cand)
        out = []
        for k, (op, i, j) in enumerate(f.steps):
            names, operands = [], []
            for x in (i, j):
                if x < C:
                    c = item.cand[x]
                    if c.mention is None:
                        names.append(str(c.value))
                        operands.append({"const": str(c.value)})
                    else:
                        names.append(f"n{c.mention}")
                        operands.append({"text": text[c.span[0]:c.span[1]], "span": list(c.span),
                                         "value": str(c.value)})
                else:
                    names.append(f"r{x - C}")
                    operands.append({"node": x - C})
            out.append({"canonical": f"{names[0]} {OPS[op]} {names[1]}", "operands": operands,
                        "value": as_text(f.values[C + k])})
        return out
