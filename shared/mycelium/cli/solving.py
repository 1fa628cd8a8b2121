"""The reader's commands: ``train-reader`` and ``solve`` (which answers with a reader or the six students)."""

from __future__ import annotations

import json
import sys

from .commands import _store, solver_options


def _programs(args):
    """The step programs ``--programs`` names (annotations of ``--data``, or a run's), why others have none, and
    where they came from."""
    from pathlib import Path

    from ..students.reader_data import annotation_programs, run_programs

    if args.programs == "annotations":
        if not args.data:
            raise ValueError("--programs annotations reads the dataset file: give --data FILE")
        labelled, reasons = annotation_programs(Path(args.data), args.val_share)
        source = f"annotations of {args.data} (operands string-matched to the text)"
    elif args.programs.startswith("run:"):
        run = args.programs[4:]
        labelled, reasons = run_programs(_store(args), run, args.val_share)
        source = f"the teacher's programs of run {run} (operands grounded by its attention, values as it read them)"
    else:
        raise ValueError(f"--programs {args.programs!r}: 'annotations' or 'run:NAME'")
    print(f"{len(labelled)} programs ({sum(p.split == 'val' for p in labelled)} val); no program: {dict(reasons)}")
    return labelled, reasons, source


def _command(name: str, args) -> str:
    return f"mycelium {name} " + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                          for k, v in vars(args).items()
                                          if k not in ("func", "command") and v not in (None, False))


def train_reader(args) -> int:
    from pathlib import Path

    from ..students.reader_train import TrainOptions, train
    from ..teacher.model import load_teacher

    labelled, reasons, source = _programs(args)
    opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, limit=args.limit,
                        train_layers=args.train_layers, lora_rank=args.lora_rank, top_lr=args.top_lr, augment=args.augment,
                        progress=not args.no_progress)
    m = train(labelled, load_teacher(args.backbone), Path(args.out), opts,
              cache=Path(args.feature_cache) if args.feature_cache else None,
              provenance={"source": source, "no_program": dict(reasons), "command": _command("train-reader", args)},
              work=Path(args.work))
    v = m["val"]
    print(f"reader: val answer accuracy {v['answer_accuracy']:.3f} (greedy), operand top-1 {v['operand_top1']:.3f}, "
          f"exact match {v['exact_match']:.3f} at epoch {m['best_epoch']}; wrote {args.out}")
    return 0


def improve_reader(args) -> int:
    """The reader's loop (``stages.reader_loop``): rounds of beams, verifier and set targets; its table; with
    ``--ship``, the best round's verifier (and its reader, when that round retrained it) into the shipped students."""
    import shutil
    from pathlib import Path

    from ..stages.reader_loop import ReaderLoop, ReaderLoopConfig
    from ..stages.reader_rounds import markdown
    from ..teacher.model import load_teacher

    labelled, _, source = _programs(args)
    others = []
    if args.data:  # the problems without a teacher's program: beamed too, a right program makes them trainable
        from ..records.datasets import BadRowError, read_dataset, split_of
        from ..solver.beams import BeamProblem

        have = {p.id for p in labelled}
        others = [BeamProblem(r.id, r.question, r.answer, split_of(r.id, args.val_share))
                  for r in read_dataset(args.data) if not isinstance(r, BadRowError) and r.id not in have]
    cfg = ReaderLoopConfig(rounds=args.rounds, min_gain=args.min_gain, width=args.beam, fold_epochs=args.fold_epochs,
                           epochs=args.epochs, verifier_epochs=args.verifier_epochs, val_share=args.val_share,
                           progress=not args.no_progress)
    loop = ReaderLoop(Path(args.work), Path(args.start), labelled, load_teacher(args.backbone), cfg,
                      Path(args.feature_cache) if args.feature_cache else None, others)
    rows = loop.run()
    print(markdown(rows))
    best = json.loads((Path(args.work) / "best.json").read_text())
    print(f"best round {best['round']}; table in {args.work}/rounds.md")
    if args.ship:
        ship = Path(args.ship)
        parts = ["verifier"] + (["reader"] if best["round"] > 0 else [])
        for part in parts:
            shutil.rmtree(ship / part, ignore_errors=True)
            shutil.copytree(Path(best[part]), ship / part, ignore=shutil.ignore_patterns("*.pt"))
        shutil.copy(Path(best["reader"]) / "trained_on.txt", ship / "verifier" / "trained_on.txt")
        made = {"source": source, "command": _command("improve-reader", args), "round": best["round"]}
        (ship / "verifier" / "loop.json").write_text(json.dumps(made | {"rounds": rows}, indent=1))
        if "reader" in parts:  # where the shipped reader comes from: the loop's round, and the reader it began as
            prov = ship / "reader" / "provenance.json"
            start = json.loads((Path(args.work) / "r0" / "reader" / "provenance.json").read_text())
            prov.write_text(json.dumps(made | json.loads(prov.read_text()) | {"started_from": start}, indent=1))
        print(f"shipped round {best['round']}'s {' and '.join(parts)} into {ship}")
    return 0


def train_verifier(args) -> int:
    """An improvement round's verifier from its beams in the store (``stages/verifier_round``) -> OUT/verifier."""
    from pathlib import Path

    from ..core.keys import RunKeys
    from ..stages.improve import Loop, improve_config
    from ..stages.verifier_round import train_verifier as train_round
    from ..teacher.model import load_teacher

    store = _store(args)
    cfg = improve_config(store, RunKeys(args.run)).model_copy(update={"progress": not args.no_progress})
    loop = Loop(store, args.run, cfg, teacher=load_teacher(cfg.backbone, device=cfg.device))
    m = train_round(loop, args.round, Path(args.out) / "verifier")
    v = m["val"]
    print(f"verifier: val top-1 {v['top1_verifier']:.3f} after reranking, {v['top1_beam']:.3f} in beam order, "
          f"pass@beam {v['pass_at_beam']:.3f}, AUC {v['auc']}; wrote {args.out}/verifier")
    return 0


def solve(args) -> int:
    """One problem's text, or every row of --data: an answer or an abstention with its reason per problem, and a
    named error (never a traceback) for a row that cannot be read or a problem that fails; the others go on."""
    from pathlib import Path

    from ..records.datasets import BadRowError, read_dataset
    from ..solver.read import ReaderOptions, ReaderSolver, reader_dir
    from ..solver.solve import FAILED, Question, Solver, solve_safely
    from ..teacher.model import load_teacher

    if bool(args.text) == bool(args.data):
        raise ValueError("give one problem's text or --data FILE")
    teacher = load_teacher(args.backbone)
    reader = reader_dir(Path(args.models))
    solver = ReaderSolver(reader, teacher, ReaderOptions(width=args.beam, choice=args.choice),
                          verifier=not args.no_verifier) if reader else \
        Solver(Path(args.models), teacher, solver_options(args))
    rows = [Question(id="cli", text=args.text)] if args.text else read_dataset(args.data, args.format)
    counts = {"answered": 0, "abstained": 0, "failed": 0, "bad rows": 0}
    for n, row in enumerate(rows):
        if args.limit and n >= args.limit:
            break
        if isinstance(row, BadRowError):
            counts["bad rows"] += 1
            print(f"skipped: {row}", file=sys.stderr)
            continue
        q = row if isinstance(row, Question) else Question(id=row.id, text=row.question)  # the answer stays behind
        sol = solve_safely(solver, q)
        if sol.reason and sol.reason.startswith(FAILED):
            counts["failed"] += 1
            print(f"failed: problem {q.id}: {sol.reason[len(FAILED):]}", file=sys.stderr)
        else:
            counts["abstained" if sol.abstained else "answered"] += 1
        if args.json:
            print(json.dumps({k: v for k, v in sol.to_json().items() if k != "trace"} | {"trace": sol.trace}))
            continue
        print(f"{q.id}: {q.text[:100]}{'...' if len(q.text) > 100 else ''}")
        for k, node in enumerate(sol.program):
            ops = ", ".join(_operand(o) for o in node["operands"])
            print(f"  r{k} = {node['canonical']:24} = {node['value']:>12}   reads {ops}")
        if sol.abstained:
            print(f"  abstained: {sol.reason}")
        else:
            print(f"  answer {sol.answer}  (confidence {sol.confidence:.2f}, {sol.programs_tried} programs "
                  f"{'finished' if reader else 'tried'}, {sol.ms:.0f} ms)")
    print(", ".join(f"{v} {k}" for k, v in counts.items()), file=sys.stderr)
    return 1 if counts["failed"] else 0


def _operand(o: dict) -> str:
    """How the trace shows an operand: the words it read (with the value read, where the words differ), an
    earlier result, or a constant."""
    if "text" in o:
        return o["text"] if o.get("value") in (None, o["text"].replace(",", "")) else f"{o['text']} (as {o['value']})"
    return f"r{o['node']}" if "node" in o else o["const"]
