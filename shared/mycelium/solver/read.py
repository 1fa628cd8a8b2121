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

import torch

from ..programs.steps import OPS, as_text
from .beam import beam_search
from .solve import Question, Solution


@dataclass
class ReaderOptions:
    width: int = 10  # beam width
    vote: bool = False  # True: the value with the most pooled probability; False: the most probable program
    choice: str = "auto"  # with a verifier: "verifier" (its best), "weighted" (mass × its probability), "beam";
    # "auto": of "verifier" and "weighted", the one with the better val top-1 in the verifier's metrics


def reader_dir(models: Path) -> Path | None:
    """Where a models directory keeps its reader (``<models>/reader`` or the directory itself), if it has one."""
    for d in (Path(models) / "reader", Path(models)):
        if (d / "config.json").is_file() and (d / "model.safetensors").is_file() and \
                '"layers"' in (d / "config.json").read_text():
            return d
    return None


def verifier_dir(reader: Path) -> Path | None:
    """The verifier beside a reader (``<reader>/../verifier``: the shipped students' and the loop's layout)."""
    d = Path(reader).parent / "verifier"
    if (d / "model.safetensors").is_file() and '"facts"' in ((d / "config.json").read_text()
                                                             if (d / "config.json").is_file() else ""):
        return d
    return None


class ReaderSolver:
    def __init__(self, path: Path, teacher, options: ReaderOptions | None = None, verifier: Path | None | bool = True):
        """``verifier``: True, the one beside the reader (if any); a path; or None/False, none."""
        from ..students.encode import backbone_id
        from ..students.reader_train import load
        from ..students.verifier_train import load as load_verifier

        self.teacher, self.options = teacher, options or ReaderOptions()
        self.model = load(path, teacher)
        self.cfg = self.model.cfg
        where = verifier_dir(path) if verifier is True else (verifier or None)
        self.verifier = load_verifier(where, backbone_id(teacher)) if where else None
        self.verifier_path = where
        self.choice = self.options.choice
        if self.choice == "auto":  # chosen on val, never on what is evaluated
            import json

            val = json.loads((Path(where) / "metrics.json").read_text())["val"] if where else {}
            self.choice = "weighted" if val.get("top1_weighted", 0) > val.get("top1_verifier", 0) else "verifier"

    def solve(self, question: Question) -> Solution:
        if not isinstance(question, Question):
            raise TypeError(f"the solver reads a Question (id, text), not {type(question).__name__}")
        from ..students.encode import frozen_features
        from ..students.reader import collate, make_item

        t0 = time.perf_counter()
        text = question.text
        stored = self.cfg.stored_layers()
        layers = sorted(set(stored) | set(self.verifier.cfg.layers if self.verifier else ()))
        both = frozen_features(self.teacher, [text], 0, progress=False, layers=tuple(layers))[text]
        enc = both.layers(layers, stored)
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
        finished = result.finished[:self.options.width]
        if self.verifier is not None:
            best, confidence = self._verified(text, both.layers(layers, self.verifier.cfg.layers), finished, trace)
        else:
            best = max(finished, key=lambda f: f.mass) if self.options.vote else finished[0]
            confidence = best.mass if self.options.vote else math.exp(best.logp)
        return done(answer=as_text(best.value), abstained=False, reason=None, confidence=confidence,
                    program=self._nodes(best, item, text), nodes_expanded=result.rounds,
                    programs_tried=len(result.finished), trace=trace)

    def _verified(self, text: str, enc, finished: list, trace: dict):
        """The verifier's scores of the beam (into the trace, with every choice rule's pick) and the chosen one."""
        from ..students.verifier import collate as vcollate, make_item as vitem
        from ..students.verifier_train import choose
        from .beams import beam_record

        beam = beam_record(finished, None)
        item = vitem(text, enc, beam, self.cfg.constants, self.cfg.readings)
        with torch.no_grad():
            scores = self.verifier(vcollate([item], self.verifier.cfg)).tolist()
        for entry, s in zip(trace["beam"], scores):
            entry["verifier"] = round(s, 4)
        picks = {how: choose(beam, scores, how) for how in ("beam", "verifier", "weighted")}
        trace["choice"] = picks | {"by": self.choice}
        k = picks[self.choice]
        return finished[k], 1 / (1 + math.exp(-scores[k]))

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
