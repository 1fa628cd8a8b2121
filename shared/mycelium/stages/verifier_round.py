"""An improvement round's verifier, as the AWS loop runs it (and ``mycelium improve`` with ``--verifier``).

The solve map writes the reader's beams of each part of the round's problems to the store
(``rounds/r<k>/beams/<split>/part-<i>.jsonl``: ``lambdas/solve`` with split ``beams-train`` or ``beams-val``);
the training job then trains the verifier on the train beams, its epoch picked on the val beams
(``mycelium train-verifier``, run by ``gpu_workers/train`` with ``MYCELIUM_TRAIN=verifier``), and uploads it
beside the round's students (``rounds/r<k>/models/verifier/``; round 0: ``models/verifier/``). The round's row
of the loop's table carries its metrics (``stages/rounds.py``). Val beams are measured, never labelled.

The reader is the loop's ``reader`` option (default: the shipped one). Its beams on problems it trained on are
more often right at the top than on new ones; the local reader loop (``stages/reader_loop.py``) cross-fits them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..core.errors import RunNotFoundError
from ..solver.beams import BeamProblem, reader_digest, write_beams
from ..students.verifier_train import pass_at_beam

SHIPPED_READER = Path(__file__).resolve().parents[1] / "data" / "students" / "reader"
_MODELS: dict[str, object] = {}  # reader digest -> the loaded reader (a warm Lambda keeps it)


def reader_path(cfg) -> Path:
    return Path(cfg.reader) if cfg.reader else SHIPPED_READER


def beams_key(loop, k: int, split: str, i: int) -> str:
    return loop.keys("rounds", f"r{k}", "beams", split, f"part-{i:05d}.jsonl")


def beams_part(loop, k: int, split: str, i: int) -> dict:
    """The reader's beams of part ``i`` of the loop's ``split`` problems -> the store (skipped when current)."""
    from ..students.reader_train import load

    reader = reader_path(loop.cfg)
    digest, key, ids = reader_digest(reader), beams_key(loop, k, split, i), loop.part(split, i)
    if loop.store.exists(key):
        lines = [json.loads(x) for x in loop.store.get(key).decode().splitlines()]
        if [r["id"] for r in lines] == ids and all(r["reader"] == digest and r["width"] == loop.cfg.beam
                                                   for r in lines):
            return {"part": i, "beams": "already done"}
    if digest not in _MODELS:
        _MODELS[digest] = load(reader, loop.teacher)
    problems = [BeamProblem(pid, loop.problem_by_id[pid].question, loop.problem_by_id[pid].answer, split)
                for pid in ids]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_beams(reader, loop.teacher, problems, Path(tmp), loop.cfg.beam, progress=False,
                           model=_MODELS[digest])
        data = path.read_bytes()
    loop.store.put(key, data)
    records = [json.loads(x) for x in data.decode().splitlines()]
    return {"part": i, "beams": len(records), "pass_at_beam": pass_at_beam(records)}


def round_beams(loop, k: int, split: str) -> dict[str, dict]:
    """Round k's beams of every part of ``split``, id -> line."""
    out = {}
    for i in loop.parts(split):
        key = beams_key(loop, k, split, i)
        if not loop.store.exists(key):
            raise RunNotFoundError(f"{loop.store.url}/{key}: round {k}'s {split} beams of part {i} were not written")
        out |= {r["id"]: r for r in map(json.loads, loop.store.get(key).decode().splitlines())}
    return out


def train_verifier(loop, k: int, out: Path) -> dict:
    """Round k's verifier from its beams into ``out`` (its metrics: val top-1 beside beam order, AUC)."""
    from ..students import verifier_train as vt
    from ..students.reader import ReaderConfig

    train, val = round_beams(loop, k, "train"), round_beams(loop, k, "val")
    reader = reader_path(loop.cfg)
    rcfg = ReaderConfig(**json.loads((reader / "config.json").read_text()))
    qs = {pid: loop.problem_by_id[pid].question for pid in list(train) + list(val)}
    enc = vt.encode(loop.teacher, sorted(set(qs.values())), None, loop.cfg.progress)
    val_records = list(val.values())
    return vt.train(vt.items_for(list(train.values()), qs, enc, rcfg), vt.items_for(val_records, qs, enc, rcfg),
                    val_records, loop.teacher, Path(out),
                    vt.VerifierOptions(epochs=loop.cfg.verifier_epochs, progress=loop.cfg.progress),
                    {"run": loop.keys.run, "round": k, "reader": reader_digest(reader), "train_beams": len(train),
                     "val_beams": len(val)})


def row(loop, k: int) -> dict | None:
    """Round k's verifier metrics for the loop's table (None: no verifier this round)."""
    key = loop.keys.model("verifier", "metrics.json", k)
    if not loop.store.exists(key):
        return None
    v = loop.store.get_json(key)["val"]
    return {name: round(v[name], 4) if isinstance(v[name], float) else v[name]
            for name in ("n", "pass_at_beam", "top1_beam", "top1_verifier", "top1_weighted", "auc")}
