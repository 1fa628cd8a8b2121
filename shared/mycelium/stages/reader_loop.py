"""``mycelium improve-reader``: the reader's loop, which learns from every right program its beams find, and
the verifier that ranks them.

Round 0 starts from a reader (the shipped one, or any saved reader) and trains two **fold readers** from
scratch, each on the teacher's programs of half the train problems (``fold_of``, by problem id). Every round k:

1. **beams**: fold reader j writes the beams of the *other* fold's train problems (cross-fitted: no beam comes
   from a reader that trained on its problem, as at inference; a reader's beams on its own training problems put
   the right value first 43 % of the time against 19 % on new ones), and the main reader writes val's
   (``solver.beams``);
2. **verifier**: trained on the train beams, its epoch picked on val's (``students.verifier_train``);
3. **measure**: on val's beams, the reader alone (beam order) beside the verifier's choice, the weighted vote,
   pass@beam (the ceiling) and the last number: one row of the table;
4. **programs**: every right program in a train problem's beam (its value is the dataset's answer), in canonical
   form, joins the problem's set of right programs; the teacher's program stays in the set. Val and test
   problems are never labelled: only ``split == "train"`` beams are read, of problems in the train split.
5. **train** round k+1's readers from round k's on the sets (one set target per problem: the marginal likelihood
   of its programs), the main reader on every train problem, fold reader j on fold j's.

It stops after ``rounds`` rounds or when the verifier's val top-1 gains less than ``min_gain``; ``best.json``
names the best round. Each step is skipped when its output exists, so an interrupted loop resumes. The table
is ``rounds.json``, ``rounds.md`` and ``rounds.png`` in the work directory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, Field

from ..programs.steps import NotAProgram, as_text, from_slots, key
from ..solver.beams import BeamProblem, read_beams, reader_digest, write_beams
from ..students.verifier_train import pass_at_beam

FOLDS = 2


class ReaderLoopConfig(BaseModel):
    rounds: int = Field(2, ge=0, le=20, description="rounds after round 0 at most")
    min_gain: float = Field(0.005, ge=0, lt=1, description="stop when the verifier's val top-1 gains less")
    width: int = Field(10, ge=1, description="beam width")
    fold_epochs: int = Field(6, ge=1, description="round 0's fold readers, trained from scratch")
    epochs: int = Field(2, ge=1, description="each later round's readers, from the round before")
    lr: float = Field(3e-4, gt=0, description="their peak learning rate (they go on from trained weights)")
    verifier_epochs: int = Field(6, ge=1)
    val_share: float = Field(0.1, gt=0, lt=1)
    progress: bool = True


def fold_of(problem_id: str) -> int:
    """A train problem's fold (0 or 1), by id (independent of the val split's hash)."""
    return int(hashlib.sha256(f"fold:{problem_id}".encode()).hexdigest()[:8], 16) % FOLDS


def right_programs(records: dict[str, dict], labelled: dict, prior: dict[str, list] | None = None) -> dict[str, list]:
    """problem id -> its right programs from train beams (canonical, distinct, none equal to the teacher's),
    added to ``prior``. ``labelled``: id -> Labelled of the train problems (``program`` None: the teacher had
    none); a problem not in it, or not of the train split, is never labelled."""
    from ..students.reader import candidates

    out = {pid: list(progs) for pid, progs in (prior or {}).items()}
    for pid, rec in records.items():
        lab = labelled.get(pid)
        if rec.get("split") != "train" or lab is None or lab.split != "train":
            continue
        cand_values = None
        seen = ({key(lab.program)} if lab.program is not None else set()) | {key(p) for p in out.get(pid, [])}
        for c in rec["candidates"]:
            if not c["correct"]:
                continue
            if cand_values is None:
                cand_values = [x.value for x in candidates(lab.question, rec["constants"], rec["readings"])[0]]
            try:
                prog = from_slots([tuple(s) for s in c["steps"]], cand_values, lab.question)
            except (NotAProgram, IndexError):
                continue
            if key(prog) not in seen:
                seen.add(key(prog))
                out.setdefault(pid, []).append(prog)
    return out


def _program_json(prog) -> dict:
    ref = lambda x: [x[0], as_text(x[1]) if x[0] == "value" else x[1]]  # noqa: E731
    return {"steps": [[s.op, ref(s.a), ref(s.b)] for s in prog.steps], "answer": as_text(prog.answer)}


def _program_of(d: dict):
    from fractions import Fraction

    from ..programs.steps import Step, StepProgram

    ref = lambda x: ("value", Fraction(x[1])) if x[0] == "value" else ("result", int(x[1]))  # noqa: E731
    return StepProgram([Step(op, ref(a), ref(b)) for op, a, b in d["steps"]], Fraction(d["answer"]))


class ReaderLoop:
    def __init__(self, work: Path, start: Path, labelled: list, teacher, cfg: ReaderLoopConfig,
                 cache: Path | None = None, others: list[BeamProblem] = ()):
        """``labelled``: the teacher's programs (``students.reader_data``), train and val split; ``others``: the
        dataset's problems the teacher has no program for (beamed and measured too: a right program in a beam
        makes a train one trainable); ``start``: the round-0 main reader (copied into the work directory)."""
        from ..students.reader_data import Labelled

        self.work, self.start, self.teacher, self.cfg, self.cache = Path(work), Path(start), teacher, cfg, cache
        self.labelled = {p.id: p for p in labelled}
        for o in others:
            self.labelled.setdefault(o.id, Labelled(o.id, o.question, o.answer, None, o.split))
        self.train_ids = sorted(pid for pid, p in self.labelled.items() if p.split == "train")
        self.val_ids = sorted(pid for pid, p in self.labelled.items() if p.split == "val")

    def dir(self, k: int) -> Path:
        return self.work / f"r{k}"

    # ---- readers
    def readers(self, k: int) -> None:
        from ..students.reader_train import TrainOptions, train

        d, progress = self.dir(k), self.cfg.progress
        sets = self.sets(k - 1) if k > 0 else {}
        if k == 0:
            if not (d / "reader" / "model.safetensors").is_file():
                shutil.copytree(self.start, d / "reader", dirs_exist_ok=True)
        else:
            data = self._data(self.labelled.values(), sets)
            if not (d / "reader" / "model.safetensors").is_file():
                train(data, self.teacher, d / "reader", TrainOptions(epochs=self.cfg.epochs, lr=self.cfg.lr,
                                                                     progress=progress),
                      self.cache, {"round": k, "from": str(self.dir(k - 1) / "reader")}, d / "work-reader",
                      start=self.dir(k - 1) / "reader")
        for j in range(FOLDS):
            out = d / f"fold{j}"
            if (out / "model.safetensors").is_file():
                continue
            mine = [p for p in self.labelled.values() if p.split == "val" or fold_of(p.id) == j]
            if k == 0:
                mine = [p for p in mine if p.program is not None]
                train(mine, self.teacher, out, TrainOptions(epochs=self.cfg.fold_epochs, patience=3,
                                                            progress=progress),
                      self.cache, {"round": 0, "fold": j}, d / f"work-fold{j}")
            else:
                train(self._data(mine, sets), self.teacher, out,
                      TrainOptions(epochs=self.cfg.epochs, lr=self.cfg.lr, progress=progress), self.cache,
                      {"round": k, "fold": j, "from": str(self.dir(k - 1) / f"fold{j}")}, d / f"work-fold{j}",
                      start=self.dir(k - 1) / f"fold{j}")

    @staticmethod
    def _data(labelled, sets: dict) -> list:
        """The training data: every problem with a program, a train problem's right programs as alternatives (the
        first one its program where the teacher had none)."""
        from dataclasses import replace

        out = []
        for p in labelled:
            more = sets.get(p.id, []) if p.split == "train" else []
            if p.program is None and more:
                p, more = replace(p, program=more[0]), more[1:]
            if p.program is not None:
                out.append(replace(p, alternatives=more))
        return out

    # ---- beams
    def beams(self, k: int) -> tuple[dict, dict]:
        """Round k's train beams (cross-fitted) and val beams (the main reader), id -> line."""
        d = self.dir(k)
        for j in range(FOLDS):
            probs = [self._problem(pid) for pid in self.train_ids if fold_of(pid) != j]
            write_beams(d / f"fold{j}", self.teacher, probs, d / "beams-train", self.cfg.width, self.cache,
                        self.cfg.progress)
        write_beams(d / "reader", self.teacher, [self._problem(pid) for pid in self.val_ids], d / "beams-val",
                    self.cfg.width, self.cache, self.cfg.progress)
        train = {}
        for j in range(FOLDS):
            train |= read_beams(d / "beams-train" / f"beams-{reader_digest(d / f'fold{j}')}.jsonl", "train")
        val = read_beams(d / "beams-val" / f"beams-{reader_digest(d / 'reader')}.jsonl", "val")
        return train, val

    def _problem(self, pid: str) -> BeamProblem:
        p = self.labelled[pid]
        return BeamProblem(pid, p.question, p.answer, p.split)

    def _reader_cfg(self, path: Path):
        from ..students.reader import ReaderConfig

        return ReaderConfig(**json.loads((path / "config.json").read_text()))

    # ---- verifier
    def verifier(self, k: int, train_beams: dict, val_beams: dict) -> dict:
        from ..students import verifier_train as vt

        out = self.dir(k) / "verifier"
        if (out / "metrics.json").is_file():
            return json.loads((out / "metrics.json").read_text())
        rcfg = self._reader_cfg(self.dir(k) / "reader")
        fold_cfgs = [self._reader_cfg(self.dir(k) / f"fold{j}") for j in range(FOLDS)]
        qs = {pid: self.labelled[pid].question for pid in list(train_beams) + list(val_beams)}
        enc = vt.encode(self.teacher, list(qs.values()), self.cache, self.cfg.progress)
        train_items = []
        for pid, rec in train_beams.items():  # a train beam's slots are its fold reader's (the other fold's)
            c = fold_cfgs[1 - fold_of(pid)]
            train_items += vt.items_for([rec], qs, enc, c)
        val_records = list(val_beams.values())
        val_items = vt.items_for(val_records, qs, enc, rcfg)
        return vt.train(train_items, val_items, val_records, self.teacher, out,
                        vt.VerifierOptions(epochs=self.cfg.verifier_epochs, progress=self.cfg.progress),
                        {"round": k, "reader": reader_digest(self.dir(k) / "reader"),
                         "train_beams": "cross-fitted fold readers", "val_beams": "the main reader"})

    # ---- programs
    def sets(self, k: int) -> dict[str, list]:
        """Round k's right programs per train problem beside the teacher's (rounds 0..k), read or built."""
        path = self.dir(k) / "programs.jsonl"
        if path.is_file():
            return {r["id"]: [_program_of(p) for p in r["programs"]]
                    for r in map(json.loads, path.read_text().splitlines())}
        prior = self.sets(k - 1) if k > 0 else {}
        d = self.dir(k)
        records = {}
        for j in range(FOLDS):
            rcfg = self._reader_cfg(d / f"fold{j}")
            for pid, rec in read_beams(d / "beams-train" / f"beams-{reader_digest(d / f'fold{j}')}.jsonl",
                                       "train").items():
                records[pid] = rec | {"constants": rcfg.constants, "readings": rcfg.readings}
        sets = right_programs(records, self.labelled, prior)
        path.write_text("".join(json.dumps({"id": pid, "programs": [_program_json(p) for p in progs]}) + "\n"
                                for pid, progs in sorted(sets.items())))
        return sets

    # ---- one row
    def measure(self, k: int, train_beams: dict, val_beams: dict, verifier: dict, seconds: float) -> dict:
        from ..evaluation.evaluate import last_number
        from ..evaluation.grading import grade_many

        sets = self.sets(k)
        prior = self.sets(k - 1) if k > 0 else {}
        val = verifier["val"]
        last = grade_many([(self.labelled[pid].answer, last_number(self.labelled[pid].question))
                           for pid in val_beams])
        tr = list(train_beams.values())
        return {"round": k, "val_n": val["n"], "val_pass_at_beam": round(val["pass_at_beam"], 4),
                "val_reader": round(val["top1_beam"], 4), "val_verifier": round(val["top1_verifier"], 4),
                "val_weighted_vote": round(val["top1_weighted"], 4),
                "verifier_gain": round(val["top1_verifier"] - val["top1_beam"], 4),
                "val_auc": round(val["auc"], 4) if val["auc"] is not None else None,
                "val_auc_beam_order": round(val["auc_beam_order"], 4) if val["auc_beam_order"] else None,
                "val_last_number": round(sum(g.correct for g in last) / max(1, len(last)), 4),
                "train_beams": len(tr), "train_pass_at_beam": round(pass_at_beam(tr), 4),
                "train_reader": round(sum(bool(r["candidates"]) and bool(r["candidates"][0]["correct"]) for r in tr)
                                      / max(1, len(tr)), 4),
                "problems_with_another_program": len(sets),
                "other_programs": sum(len(v) for v in sets.values()),
                "new_programs": sum(len(v) for v in sets.values()) - sum(len(v) for v in prior.values()),
                "seconds": round(seconds, 1)}

    def run(self) -> list[dict]:
        from .reader_rounds import write_table

        self.work.mkdir(parents=True, exist_ok=True)
        rows: list[dict] = []
        for k in range(self.cfg.rounds + 1):
            t0 = time.perf_counter()
            row_path = self.dir(k) / "round.json"
            if row_path.is_file():
                row = json.loads(row_path.read_text())
            else:
                self.readers(k)
                train_beams, val_beams = self.beams(k)
                verifier = self.verifier(k, train_beams, val_beams)
                row = self.measure(k, train_beams, val_beams, verifier, time.perf_counter() - t0)
                row_path.write_text(json.dumps(row, indent=1))
            rows.append(row)
            write_table(self.work, rows)
            if k > 0 and row["val_verifier"] - max(r["val_verifier"] for r in rows[:-1]) < self.cfg.min_gain:
                break
        best = max(rows, key=lambda r: (r["val_verifier"], -r["round"]))
        (self.work / "best.json").write_text(json.dumps({"round": best["round"], "reader": str(
            self.dir(best["round"]) / "reader"), "verifier": str(self.dir(best["round"]) / "verifier")}, indent=1))
        return rows

