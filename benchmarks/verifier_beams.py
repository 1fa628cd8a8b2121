"""Why the verifier learns from cross-fitted beams: verifiers trained on two kinds of train beams of GSM8K train,
measured on the same val beams (the main reader's) in one run, beside beam order on them.

- ``in-fold``: the main reader's own beams on the train problems it trained on;
- ``cross-fitted``: the loop's fold readers' beams (each on the half it did not train on).

    python benchmarks/verifier_beams.py --loop runs/reader-loop [--epochs 4]

It reads round 0 of a reader loop (``mycelium improve-reader``) and writes its in-fold beams into
``<loop>/r0/beams-infold/`` (resumable); it skips cleanly when GSM8K train or the loop is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", default=str(ROOT / "runs" / "reader-loop"))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    r0 = Path(args.loop) / "r0"
    if not DATA.is_file() or not (r0 / "beams-val").is_dir():
        print(f"skipped: {DATA} or {r0}/beams-val is absent (run `mycelium improve-reader` first)")
        return 0
    from mycelium.records.datasets import BadRowError, read_dataset
    from mycelium.solver.beams import BeamProblem, read_beams, reader_digest, write_beams
    from mycelium.stages.reader_loop import FOLDS
    from mycelium.students import verifier_train as vt
    from mycelium.students.reader import ReaderConfig
    from mycelium.teacher.model import load_teacher

    teacher, cache = load_teacher("embedded"), ROOT / "runs" / ".features"
    rows = [r for r in read_dataset(DATA, "gsm8k") if not isinstance(r, BadRowError)]
    qs = {r.id: r.question for r in rows}
    cfg = lambda d: ReaderConfig(**json.loads((d / "config.json").read_text()))  # noqa: E731
    main_reader = r0 / "reader"
    val = read_beams(r0 / "beams-val" / f"beams-{reader_digest(main_reader)}.jsonl", "val")
    crossed = {}
    for j in range(FOLDS):
        crossed |= {pid: (rec, cfg(r0 / f"fold{j}")) for pid, rec in read_beams(
            r0 / "beams-train" / f"beams-{reader_digest(r0 / f'fold{j}')}.jsonl", "train").items()}
    train_ids = sorted(crossed)
    path = write_beams(main_reader, teacher, [BeamProblem(r.id, r.question, r.answer, "train") for r in rows
                                              if r.id in crossed], r0 / "beams-infold", cache=cache)
    infold = read_beams(path, "train")
    enc = vt.encode(teacher, sorted({qs[pid] for pid in list(crossed) + list(val)}), cache, False)
    val_records = list(val.values())
    val_items = vt.items_for(val_records, qs, enc, cfg(main_reader))
    print("| train beams | beams | their top-1 | their pass@beam | val: beam order | val: + verifier | "
          "weighted vote | AUC (beam order) |\n|---|---|---|---|---|---|---|---|")
    for name, recs in (("in-fold (the main reader on its own training problems)", {p: (infold[p], cfg(main_reader))
                                                                                    for p in train_ids}),
                       ("cross-fitted (the fold readers, each on the other half)", crossed)):
        items = [it for pid in train_ids for it in vt.items_for([recs[pid][0]], qs, enc, recs[pid][1])]
        m = vt.train(items, val_items, val_records, teacher, Path(args.loop) / "ablation" / name.split()[0],
                     vt.VerifierOptions(epochs=args.epochs, progress=False))["val"]
        tr = [recs[p][0] for p in train_ids]
        top = sum(bool(r["candidates"]) and bool(r["candidates"][0]["correct"]) for r in tr) / len(tr)
        pb = sum(any(c["correct"] for c in r["candidates"]) for r in tr) / len(tr)
        print(f"| {name} | {len(tr)} | {top:.3f} | {pb:.3f} | {m['top1_beam']:.3f} | {m['top1_verifier']:.3f} | "
              f"{m['top1_weighted']:.3f} | {m['auc']:.3f} ({m['auc_beam_order']:.3f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
