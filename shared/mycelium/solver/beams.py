"""The reader's beams over many problems, labelled by execution: the verifier's training data and pass@beam.

``write_beams`` runs the reader's beam search (``beam.beam_search``) on each problem and writes one JSON line
per problem: every finished candidate (one per distinct value: its best program's steps over the problem's
candidate slots, log-probability, pooled mass, rank) and, where the problem has a dataset answer, whether the
value is that answer (``correct``). The file is keyed by the reader's content digest: a changed reader starts
a new file, an interrupted run resumes after the last whole line. The question text is not written (join it
back by id), so beams of a dataset's problems may be kept beside a run without its text.

A val or test problem's beams may be written (they measure), but only train-split beams teach: the verifier's
and the loop's readers of these files take ``split == "train"`` lines alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..students.saved import files_digest


@dataclass
class BeamProblem:
    id: str
    question: str
    answer: str | None  # the dataset's answer (None: unlabelled, e.g. a question asked at inference)
    split: str  # "train", "val" or "test"


def reader_digest(path: Path) -> str:
    """12 hex digits naming a saved reader (or verifier) by content: its config and weights."""
    return files_digest(Path(path), ["config.json", "model.safetensors"], "no saved student")


def beam_record(finished: list, answer: str | None) -> list[dict]:
    """A beam's finished candidates (``BeamResult.finished``) as JSON-ready dicts, best first, labelled against
    ``answer`` (None: unlabelled)."""
    from ..programs.execute import exact

    gold = exact(answer) if answer is not None else None
    return [{"value": str(f.value), "logp": round(f.logp, 5), "mass": round(f.mass, 6),
             "steps": [list(s) for s in f.steps],
             "correct": None if answer is None else (gold is not None and f.value == gold)}
            for f in finished]


def read_beams(path: Path, split: str | None = None) -> dict[str, dict]:
    """problem id -> its beam line (the whole lines of ``path``; ``split``: that split's alone)."""
    out = {}
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut off by an interruption: written again on resume
        if split is None or rec["split"] == split:
            out[rec["id"]] = rec
    return out


def write_beams(reader_path: Path, teacher, problems: list[BeamProblem], out: Path, width: int = 10,
                cache: Path | None = None, progress: bool = True, chunk: int = 64, model=None) -> Path:
    """Beams of ``problems`` into ``out/beams-<reader digest>.jsonl`` (resumed); returns that path."""
    from tqdm import tqdm

    from ..students.reader import collate, make_item
    from ..students.reader_train import features_for, load
    from .beam import beam_search

    digest = reader_digest(reader_path)
    model = model or load(reader_path, teacher)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"beams-{digest}.jsonl"
    done = read_beams(path)
    if path.is_file():  # drop a cut-off last line before appending
        path.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    todo = [p for p in problems if p.id not in done]
    bar = tqdm(total=len(todo), desc="beams", unit="problem", disable=not progress)
    with path.open("a") as f:
        for k in range(0, len(todo), chunk):
            part = todo[k:k + chunk]
            encoded = features_for(teacher, model.cfg, [p.question for p in part], cache, progress=False)
            for p in part:
                item = make_item(p.question, encoded[p.question], model.cfg)
                cands: list[dict] = []
                fmt = None
                if any(c.mention is not None for c in item.cand):
                    result = beam_search(model, collate([item], model.cfg), [c.value for c in item.cand], None,
                                         width=width)
                    cands, fmt = beam_record(result.finished[:width], p.answer), result.fmt
                f.write(json.dumps({"id": p.id, "split": p.split, "reader": digest, "width": width, "fmt": fmt,
                                    "candidates": cands}) + "\n")
                bar.update(1)
            f.flush()
    bar.close()
    return path


