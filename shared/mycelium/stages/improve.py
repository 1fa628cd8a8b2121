"""``mycelium improve``: the self-improving loop. Execution is a free verifier, so the students label for themselves.

Round 0 trains the six students on the teacher's labels of the loop's problems (the run's train-split problems,
or the first ``problems`` of them) and measures them on the val split. Round k then:

1. **students label** (``student-r<k>``, a map): round k-1's students solve every loop problem; the most probable
   program that executes to the dataset's answer is a label of source ``student`` (``stages/student.py``);
2. **teacher mop-up**: the problems nothing has a program for yet (not the teacher's reference CoT, not a
   student, not an earlier mop-up) and that no earlier round asked, at most ``mop_up_limit``, go to the teacher
   with *generated* CoT (``mop_up_teacher``: the embedded one or a larger one by path, the hybrid strategy):
   capture -> analyze -> label in a run of their own (``<run>.mopup-r<k>``), with this run's templates;
3. **merge** (``merge-r<k>``): the teacher's, the mop-ups' and the students' labels, one source per problem;
4. **train** round k's students on it (the options of round 0) and measure them on the val split.

It stops after ``rounds`` rounds, when val accuracy gains less than ``min_gain``, or when a round has nothing
new (no student program and no teacher call). Each step is a stage, or is skipped when its output is current,
so an interrupted loop resumes. The same steps run on AWS (``lambdas/solve``, ``lambdas/improve``, the training
job): :class:`Loop` with ``models_root=None`` reads each round's students from the store. The per-round table
(``stages/rounds.py``) is ``rounds/improve.json``, ``improve.md`` and ``improve.png`` of the run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from functools import cached_property
from pathlib import Path

from ..core.config import (AnalyzeConfig, CaptureConfig, ImproveConfig, IngestConfig, LabelConfig, MergeConfig,
                           StudentLabelConfig)
from ..core.errors import MyceliumError, RunNotFoundError
from ..core.keys import RUN_ITEM, RunKeys, mop_up_run, student_stage
from ..core.lineage import StageRecord, current_lineage, mismatch, read_commit, read_record
from ..core.store import Store, json_bytes
from ..records.datasets import dataset_row
from ..records.programs import COMPONENTS
from .label import kept
from .problems import read_problems
from .student import loop_problems

IMPROVE = "improve"  # the loop's stage record: its ImproveConfig
_FETCHED: dict[tuple[str, str], tuple[str, Path]] = {}  # (store, models prefix) -> (content digest, local copy)
_FETCHED_LOCK = threading.Lock()


def write_improve_config(store: Store, keys: RunKeys, cfg: ImproveConfig) -> None:
    """``stages/improve.json``: the loop's options (written by ``mycelium improve`` or at a cloud run's start)."""
    store.put_json(keys.stage_record(IMPROVE), StageRecord(stage=IMPROVE, after="merge", config=cfg.model_dump(
        mode="json"), config_hash=cfg.hash()).model_dump(mode="json"))


def improve_config(store: Store, keys: RunKeys) -> ImproveConfig:
    return ImproveConfig.model_validate(read_record(store, keys, IMPROVE).config)


class Loop:
    """One run's improvement loop. ``models_root``: where each round's students are written and read (``r<k>/``);
    None: in the store (``models/``, ``rounds/r<k>/models/``, as the training job uploads them)."""

    def __init__(self, store: Store, run: str, cfg: ImproveConfig, models_root: Path | None = None, teacher=None,
                 feature_cache: Path | None = None):
        self.store, self.keys, self.cfg = store, RunKeys(run), cfg
        self.models_root, self._teacher = (Path(models_root) if models_root else None), teacher
        self.feature_cache = feature_cache
        self._solver = None  # (students' digest, Solver): the val parts of a round share one
        self._stages: dict = {}  # round -> its student-label stage: the training parts of a round share it

    @cached_property
    def val_share(self) -> float:
        return MergeConfig.model_validate(read_record(self.store, self.keys, "merge").config).val_share

    @cached_property
    def problems(self) -> list[str]:
        return loop_problems(self.store, self.keys, self.val_share, self.cfg.problems)

    @cached_property
    def val(self) -> list[str]:
        return loop_problems(self.store, self.keys, self.val_share, self.cfg.val_limit, split="val")

    @cached_property
    def problem_by_id(self) -> dict:
        return {p.id: p for p in read_problems(self.store, self.keys)}

    @property
    def teacher(self):
        if self._teacher is None:
            from ..teacher.model import load_teacher

            self._teacher = load_teacher(self.cfg.backbone, device=self.cfg.device)
        return self._teacher

    def check(self) -> None:
        if not self.problems or not self.val:
            raise MyceliumError(f"run {self.keys.run!r}: {len(self.problems)} train-split and {len(self.val)} "
                                "val-split problems; the loop needs both")

    # ---- students on disk
    def models(self, k: int) -> Path:
        """Round k's six students as a local directory (from the store, once, when they live there)."""
        if self.models_root is not None:
            return self.models_root / f"r{k}"
        prefix = self.keys.models(k)
        blobs = {key[len(prefix):]: self.store.get(key) for key in self.store.list(prefix)}
        if not blobs:
            raise RunNotFoundError(f"{self.store.url}/{prefix}: round {k}'s students were not uploaded (the training "
                                   "job writes them)")
        sha = hashlib.sha256(b"".join(name.encode() + hashlib.sha256(b).digest() for name, b in sorted(blobs.items())))
        with _FETCHED_LOCK:  # one copy on disk per process and round, replaced when the students are (by content)
            memo = _FETCHED.get((self.store.url, prefix))
            if memo is None or memo[0] != sha.hexdigest():
                local = Path(tempfile.mkdtemp(prefix=f"mycelium-models-r{k}-"))
                for name, blob in blobs.items():
                    (local / name).parent.mkdir(parents=True, exist_ok=True)
                    (local / name).write_bytes(blob)
                if memo is not None:
                    shutil.rmtree(memo[1], ignore_errors=True)  # a warm Lambda's /tmp is small
                memo = _FETCHED[(self.store.url, prefix)] = (sha.hexdigest(), local)
        return memo[1]

    def parts(self, split: str) -> list[int]:
        ids = self.problems if split == "train" else self.val
        return list(range((len(ids) + self.cfg.part_size - 1) // self.cfg.part_size))

    def part(self, split: str, i: int) -> list[str]:
        ids = self.problems if split == "train" else self.val
        return ids[i * self.cfg.part_size:(i + 1) * self.cfg.part_size]

    # ---- the map steps: one part of the problems (a Lambda on AWS)
    def student_stage(self, k: int):
        from ..students.saved import models_digest
        from .student import StudentLabelStage

        models, c = self.models(k - 1), self.cfg
        cfg = StudentLabelConfig(round=k, models=str(models), models_sha256=models_digest(models), backbone=c.backbone,
                                 theta=c.theta, width=c.width, budget=c.budget, max_programs=c.max_programs,
                                 val_share=self.val_share, problems=c.problems, progress=c.progress)
        if k not in self._stages or self._stages[k].config != cfg:  # its solver (the students) loaded once a round
            self._stages[k] = StudentLabelStage(self.store, self.keys.run, cfg, teacher=self._teacher)
        return self._stages[k]

    def label_part(self, k: int, i: int) -> dict:
        """Round k's students label part i of the loop problems (round k-1's students solve them)."""
        from .runner import run_stage

        summary = run_stage(self.student_stage(k), items=self.part("train", i), progress=self.cfg.progress,
                            save_summary=False)
        return {"part": i, "problems": summary.n_in, "kept": int(summary.counters.get("kept", 0)),
                "failed": summary.failed}

    def tally_students(self, k: int) -> None:
        """Round k's line of the run summary, from the store (its parts ran in separate calls)."""
        from ..core.summary import save_stage
        from .base import tally_from_store
        from .student import StudentLabelStage

        stage = StudentLabelStage.of_round(self.store, self.keys.run, k)
        save_stage(self.store, self.keys, stage.name, tally_from_store(stage))

    def solve_part(self, k: int, i: int) -> dict:
        """Round k's students on part i of the val problems -> ``rounds/r<k>/val/part-<i>.json`` (their answers)."""
        from tqdm import tqdm

        from ..solver.solve import Question, Solver, SolverOptions, solve_safely
        from ..students.saved import models_digest

        key, models = self.keys("rounds", f"r{k}", "val", f"part-{i:05d}.json"), self.models(k)
        made = {"models_sha256": models_digest(models), "search": self.search_hash, "ids": self.part("val", i)}
        if self.store.exists(key) and {n: self.store.get_json(key).get(n) for n in made} == made:
            return {"part": i, "solved": "already done"}
        c = self.cfg
        if self._solver is None or self._solver[0] != made["models_sha256"]:  # the students loaded once per round
            self._solver = (made["models_sha256"], Solver(models, self.teacher, SolverOptions(
                theta=c.theta, width=c.width, budget=c.budget, max_programs=c.max_programs)))
        solver = self._solver[1]
        answers, ms = {}, {}
        for pid in tqdm(self.part("val", i), desc=f"val r{k}", unit="problem", disable=not c.progress):
            sol = solve_safely(solver, Question(id=pid, text=self.problem_by_id[pid].question))  # the text only
            answers[pid], ms[pid] = sol.answer, round(sol.ms, 1)
        self.store.put(key, json_bytes({**made, "answers": answers, "ms": ms}))
        return {"part": i, "problems": len(answers)}

    @property
    def search_hash(self) -> str:
        """What a val answer depends on besides the students: the search's options and the backbone."""
        from ..core.config import digest

        c = self.cfg
        return digest([c.backbone, c.theta, c.width, c.budget, c.max_programs])

    # ---- the reduce steps
    def measure(self, k: int) -> dict:
        """Round k's val parts, graded -> ``rounds/r<k>/val.json``, beside the last-number baseline on them."""
        from ..evaluation.evaluate import last_number
        from ..evaluation.grading import grade_many

        answers, ms, digests = {}, {}, set()
        for i in self.parts("val"):
            key = self.keys("rounds", f"r{k}", "val", f"part-{i:05d}.json")
            if not self.store.exists(key):
                raise RunNotFoundError(f"{self.store.url}/{key}: round {k}'s val part {i} was not solved")
            part = self.store.get_json(key)
            if part.get("search") != self.search_hash or part.get("ids") != self.part("val", i):
                raise RunNotFoundError(f"{self.store.url}/{key}: solved with other search options or problems; "
                                       "solve the part again")
            answers |= part["answers"]
            ms |= part["ms"]
            digests.add(part["models_sha256"])
        if len(digests) != 1:
            raise MyceliumError(f"round {k}: val parts solved by different students {sorted(digests)}")
        problems = [self.problem_by_id[pid] for pid in self.val]
        grades = grade_many([(p.answer, answers[p.id]) for p in problems])
        trivial = grade_many([(p.answer, last_number(p.question)) for p in problems])
        correct = sum(g.correct for g in grades)
        out = {"models_sha256": digests.pop(), "n": len(problems), "correct": correct,
               "accuracy": correct / len(problems), "abstained": sum(answers[p.id] is None for p in problems),
               "solve_ms_mean": sum(ms.values()) / len(ms),
               "last_number_accuracy": sum(g.correct for g in trivial) / len(problems)}
        self.store.put(self.keys("rounds", f"r{k}", "val.json"), json_bytes(out))
        return out

    def unsolved(self, students: int, mop_ups: int) -> list[str]:
        """The loop problems with no program from the teacher, the students of rounds 1..``students`` or the
        mop-ups of rounds 1..``mop_ups``."""
        have = set(kept(self.store, self.keys, "label")[1])
        for j in range(1, students + 1):
            have |= kept(self.store, self.keys, student_stage(j))[1]
        for j in range(1, mop_ups + 1):
            have |= kept(self.store, RunKeys(mop_up_run(self.keys.run, j)), "label")[1]
        return [pid for pid in self.problems if pid not in have]

    def new_programs(self, k: int) -> set[str]:
        """Round k's student programs for problems that had none before the round (what it can add)."""
        before = set(self.unsolved(k - 1, k - 1))
        return kept(self.store, self.keys, student_stage(k))[1] & before

    def asked(self, through: int) -> set[str]:
        """The problems the mop-ups of rounds 1..``through`` asked the teacher about."""
        return set().union(*(set(self._mop_up_problems(j)) for j in range(1, through + 1)))

    def _mop_up_problems(self, k: int) -> list[str]:
        keys = RunKeys(mop_up_run(self.keys.run, k))
        if read_commit(self.store, keys, "ingest", RUN_ITEM) is None:
            return []
        return [p.id for p in read_problems(self.store, keys)]

    def start_mop_up(self, k: int) -> dict:
        """The teacher's turn in round k: the problems still without a program that no earlier round asked (at
        most ``mop_up_limit``) become run ``<run>.mopup-r<k>``: its input, every stage's record (capture with
        generated CoT, analyze and label as this run's, label with this run's templates) and its ingest."""
        from .analyze import AnalyzeStage
        from .capture import CaptureStage
        from .ingest import IngestStage
        from .label import LabelStage
        from .runner import run_stage

        from .problems import shard_keys

        run, c = mop_up_run(self.keys.run, k), self.cfg
        keys = RunKeys(run)
        if read_commit(self.store, keys, "ingest", RUN_ITEM) is not None:  # started before: the same problems
            return {"run": run, "asked": len(self._mop_up_problems(k)), "shards": len(shard_keys(self.store, keys))}
        asked = self.asked(k - 1)
        ask = [pid for pid in self.unsolved(k, k - 1) if pid not in asked][:self.cfg.mop_up_limit]
        if not ask or not c.mop_up_teacher:
            return {"run": run, "asked": 0, "shards": 0}
        base = CaptureConfig.model_validate(read_record(self.store, self.keys, "capture").config)
        same = c.mop_up_teacher == base.teacher  # the same teacher: its computing heads, no recalibration
        heads = tuple(map(tuple, self.store.get_json(self.keys.calibration)["computing_heads"])) if same else None
        capture = CaptureConfig(teacher=c.mop_up_teacher, cot="generate", max_new_tokens=c.mop_up_max_new_tokens,
                                generate_batch=c.mop_up_batch, n_computing_heads=base.n_computing_heads,
                                computing_heads=heads, hidden_layer=base.hidden_layer if same else None,
                                dtype=base.dtype, signals=base.signals, device=c.device, progress=c.progress)
        analyze = AnalyzeConfig.model_validate({**read_record(self.store, self.keys, "analyze").config,
                                                "progress": c.progress})
        label = LabelConfig.model_validate({**read_record(self.store, self.keys, "label").config,
                                            "templates_run": self.keys.run, "progress": c.progress})
        data = "".join(json.dumps(dataset_row(self.problem_by_id[pid])) + "\n" for pid in ask).encode()
        self.store.put(keys("input", "mop-up.jsonl"), data)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mop-up.jsonl"
            path.write_bytes(data)
            ingest = IngestStage(self.store, run, IngestConfig(), path, data_name="input/mop-up.jsonl")
            for stage in (ingest, CaptureStage(self.store, run, capture), AnalyzeStage(self.store, run, analyze),
                          LabelStage(self.store, run, label)):
                stage.begin()
            run_stage(ingest, progress=False)
        return {"run": run, "asked": len(ask), "shards": len(shard_keys(self.store, keys))}

    def mop_up_here(self, k: int, started: dict) -> None:
        """The mop-up run's capture, analyze and label in this process (AWS: the capture jobs and two maps)."""
        from .analyze import AnalyzeStage
        from .capture import CaptureStage
        from .label import LabelStage
        from .runner import run_stage

        run, progress = started["run"], self.cfg.progress
        same = self._teacher is not None and self.cfg.mop_up_teacher == self.cfg.backbone
        capture = CaptureStage.current(self.store, run, teacher=self.teacher if same else None)
        capture.prepare()
        run_stage(capture, progress=progress)
        for cls in (AnalyzeStage, LabelStage):
            run_stage(cls.current(self.store, run), progress=progress)

    def merge(self, k: int) -> dict:
        from .merge import MergeStage
        from .runner import run_stage

        stage = MergeStage(self.store, self.keys.run, MergeConfig(val_share=self.val_share, round=k))
        run_stage(stage, progress=False)
        return read_commit(self.store, self.keys, stage.name, RUN_ITEM).detail

    def train(self, k: int) -> Path:
        """Round k's students into ``models_root/r<k>`` (skipped when they were made from the current merged data
        and problems). On AWS the training job does this (``gpu_workers/train``)."""
        from ..students.train import TrainOptions
        from .train import problems_digest, run_train

        models, c = self.models_root / f"r{k}", self.cfg
        stage = "merge" if k == 0 else f"merge-r{k}"
        commit = read_commit(self.store, self.keys, stage, RUN_ITEM)
        if commit is None or mismatch(current_lineage(self.store, self.keys, stage), commit.lineage):
            raise RunNotFoundError(f"run {self.keys.run!r}: {stage}'s merged data is missing or stale")
        marker = models / "loop.json"  # what these students were made from, for the skip below
        made = {"merge_lineage": commit.lineage, "problems": problems_digest(self.problems),
                "train": c.model_dump(include={"epochs", "batch_size", "lr", "seed", "hidden", "adapter_layers",
                                               "backbone"})}
        if marker.is_file() and json.loads(marker.read_text()) == made and all(
                (models / c_ / "model.safetensors").is_file() for c_ in COMPONENTS):
            return models
        marker.unlink(missing_ok=True)
        run_train(self.store, self.keys.run, models, self.teacher, list(COMPONENTS),
                  opts=TrainOptions(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, progress=c.progress),
                  feature_cache=self.feature_cache, from_round=k, problems=set(self.problems), hidden=c.hidden,
                  adapter_layers=c.adapter_layers)
        marker.write_text(json.dumps(made, indent=1))
        return models

    # ---- the whole loop in this process
    def run(self) -> dict:
        from .rounds import report

        self.check()
        write_improve_config(self.store, self.keys, self.cfg)
        k = 0
        while True:
            t0 = time.perf_counter()
            if k > 0:
                for i in self.parts("train"):
                    self.label_part(k, i)
                self.tally_students(k)
                t1 = time.perf_counter()
                started = self.start_mop_up(k)
                if started["asked"]:
                    self.mop_up_here(k, started)
                t2 = time.perf_counter()
                if not self.new_programs(k) and not started["asked"]:
                    return report(self, k, nothing_new=True)
                self.merge(k)
            t3 = time.perf_counter()
            self.train(k)
            if self.cfg.verifier:  # the reader's beams of the round's problems teach the round's verifier
                from .verifier_round import beams_part, train_verifier

                for split in ("train", "val"):
                    for i in self.parts(split):
                        beams_part(self, k, split, i)
                if not (self.models(k) / "verifier" / "model.safetensors").is_file():
                    train_verifier(self, k, self.models(k) / "verifier")
                for f in sorted((self.models(k) / "verifier").iterdir()):
                    self.store.put(self.keys.model("verifier", f.name, k), f.read_bytes())
            t4 = time.perf_counter()
            for i in self.parts("val"):
                self.solve_part(k, i)
            self.measure(k)
            timings = {"train_s": round(t4 - t3, 1), "val_s": round(time.perf_counter() - t4, 1)}
            if k > 0:
                timings |= {"students_s": round(t1 - t0, 1), "mop_up_s": round(t2 - t1, 1)}
            self.store.put(self.keys("rounds", f"r{k}", "timings.json"), json_bytes(timings))
            out = report(self, k)
            if not out["continue"]:
                return out
            k += 1
