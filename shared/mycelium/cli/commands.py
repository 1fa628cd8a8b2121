"""What each ``mycelium`` command does: build the stage's config from the options, run it, print the outcome.

Exit status: 0 when the stage ran (some items may have failed: they are in the ledger and counted), 1 when
every item it tried failed, 2 for an error that stopped the stage (a bad option, an unknown run, a config
that cannot work, a failed reduce: its reason is printed and in the ledger).
"""

from __future__ import annotations

import json
import sys

from ..core.keys import RunKeys


def capture_config(args, **runtime):
    """The CaptureConfig of the dataset and teacher options (``capture`` and ``submit``)."""
    from ..core.config import CaptureConfig

    heads = None
    if args.computing_heads:
        heads = tuple(tuple(int(x) for x in pair.split(":")) for pair in args.computing_heads.split(","))
    return CaptureConfig(teacher=args.teacher, cot=args.cot, max_new_tokens=args.max_new_tokens,
                         generate_batch=args.generate_batch,
                         n_computing_heads=args.n_computing_heads, computing_heads=heads,
                         hidden_layer=args.hidden_layer, dtype=args.dtype, batch_size=args.capture_batch,
                         **({"chunk_format_version": args.chunk_format} if args.chunk_format else {}), **runtime)


def ingest_config(args, **extra):
    from ..core.config import IngestConfig

    return IngestConfig(limit=args.limit, dataset_format=args.format, **extra)


def analyze_config(args, **runtime):
    from ..core.config import AnalyzeConfig

    fields = {k: v for k, v in {
        "peak_prominence": args.peak_prominence, "peak_distance": args.peak_distance,
        "heartbeat_threshold": args.heartbeat_threshold, "heartbeat_min_run": args.heartbeat_min_run,
        "jsd_layers": tuple(int(x) for x in args.jsd_layers.split(",")) if args.jsd_layers else None,
        "segmentation": args.segmentation, "heartbeat_signal": args.heartbeat_signal,
    }.items() if v is not None}
    return AnalyzeConfig(**fields, **runtime)


def discover_config(args, **runtime):
    from ..core.config import DiscoverConfig

    fields = {k: v for k, v in {"min_size": args.min_size, "gain": args.gain, "elbow": args.elbow or None,
                                "distinct_rows": args.distinct_rows or None, "dtype": args.ib_dtype}.items()
              if v is not None}
    return DiscoverConfig(**fields, **runtime)


def _store(args):
    from ..core.store import open_store

    return open_store(args.store)


def _outcome(store, run: str, stage: str) -> int:
    """Print the run summary; say where the ledger is when items failed; 1 when every item failed."""
    from ..core.summary import format_summary, load_summary

    summary = load_summary(store, RunKeys(run))
    print(format_summary(summary))
    st = summary.stages[stage]
    if st.failed:
        print(f"{st.failed} item(s) of {stage} failed: see {store.url}/{RunKeys(run).failures(stage)}", file=sys.stderr)
    if st.all_failed:
        print(f"mycelium {stage}: every item failed", file=sys.stderr)
        return 1
    return 0


def capture(args) -> int:
    from ..stages.capture import run_capture

    store = _store(args)
    result = run_capture(args.data, args.run, store, capture_config(args, device=args.device, progress=not args.no_progress),
                         ingest_config(args))
    code = _outcome(store, args.run, "capture")
    print(f"computing heads: {result.calibration.computing_heads}")
    print(f"outputs: {store.url}/{args.run}/")
    return code


def analyze(args) -> int:
    from ..stages.analyze import AnalyzeStage
    from ..stages.runner import run_stage

    store = _store(args)
    stage = AnalyzeStage(store, args.run, analyze_config(args, workers=args.workers, progress=not args.no_progress))
    run_stage(stage, workers=stage.config.workers, progress=stage.config.progress)
    code = _outcome(store, args.run, "analyze")
    print(stage.report_text())
    return code


def aggregate(args) -> int:
    from ..core.config import AggregateConfig
    from ..core.keys import RUN_ITEM
    from ..core.lineage import read_commit
    from ..stages.aggregate import AggregateStage
    from ..stages.runner import run_stage

    store = _store(args)
    stage = AggregateStage(store, args.run, AggregateConfig())
    run_stage(stage, progress=False)
    code = _outcome(store, args.run, "aggregate")
    d = read_commit(store, stage.keys, stage.name, RUN_ITEM).detail
    print(f"{d['steps']} steps x {d['dims']} dims, labels {d['vocab']} -> {store.url}/{args.run}/ib/")
    return code


def discover(args) -> int:
    from ..stages.discover import DiscoverStage
    from ..stages.runner import run_stage
    from ..templates.taxonomy import format_tree

    store = _store(args)
    stage = DiscoverStage(store, args.run, discover_config(args, progress=not args.no_progress))
    run_stage(stage, progress=False)
    taxonomy = store.get_json(stage.keys("ib", "taxonomy.json"))
    print(format_tree(taxonomy))
    counts = ", ".join(f"{g}: {n}" for g, n in taxonomy["templates_at_gain"].items())
    print(f"templates at gain {counts}; critical beta predicted {taxonomy['beta_c_predicted']:.3f}, "
          f"first split at {taxonomy['beta_first_split'] or float('nan'):.3f}")
    print(f"wrote {store.url}/{args.run}/ib/taxonomy.json, information_plane.png, gains.png")
    return _outcome(store, args.run, "discover")


def label(args) -> int:
    from ..core.config import LabelConfig
    from ..stages.label import LabelStage
    from ..stages.runner import run_stage

    store = _store(args)
    fields = {"augment": args.augment} if args.augment is not None else {}
    stage = LabelStage(store, args.run, LabelConfig(progress=not args.no_progress, **fields))
    summary = run_stage(stage, workers=args.workers, progress=stage.config.progress)
    code = _outcome(store, args.run, "label")
    kept, n = summary.counters.get("kept", 0), summary.n_out
    print(f"programs that execute to the dataset's answer: {kept} of {n} ({100 * kept / max(1, n):.1f}%)")
    for name, v in sorted(summary.counters.items()):
        if name.startswith("rejected: "):
            print(f"  {name}: {v}")
    if stage.config.augment:
        print(f"augmented: {summary.counters.get('variants', 0)} variants of {kept} programs "
              f"(yield {summary.counters.get('variants', 0) / max(1, kept * stage.config.augment):.2f} of K={stage.config.augment})")
    return code


def merge(args) -> int:
    from ..core.config import MergeConfig
    from ..stages.merge import MergeStage
    from ..stages.runner import run_stage

    store = _store(args)
    stage = MergeStage(store, args.run, MergeConfig(**({"val_share": args.val_share} if args.val_share else {})))
    run_stage(stage, progress=False)
    code = _outcome(store, args.run, "merge")
    stats = store.get_json(stage.keys("training", "stats.json"))
    for key, n in stats["examples"].items():
        print(f"  {key}: {n}")
    print(f"wrote {store.url}/{args.run}/training/<component>/{{train,val}}.jsonl and stats.json")
    return code


def show(args) -> int:
    from ..viz.show import show as show_problem

    show_problem(_store(args), args.run, args.problem_id)
    return 0


def inspect(args) -> int:
    from ..viz.inspect import inspect as inspect_problem

    inspect_problem(_store(args), args.run, args.problem_id)
    return 0


def deploy(args) -> int:
    from ..cloud.deploy import deploy as run_deploy
    from ..cloud.deploy import deploy_command

    argv = deploy_command(args.bucket, args.region, args.name, args.spot, args.max_vcpus, args.vllm, args.synth,
                          train_gpus=args.train_gpus)
    print("$ " + " ".join(argv), flush=True)
    return run_deploy(argv)


def submit(args) -> int:
    from ..cloud.manifest import MapConfig, manifest_key, submit as submit_run
    from ..core.store import open_store

    store = open_store(args.store or f"s3://{args.bucket}/runs")
    keys = RunKeys(args.run)
    manifest = submit_run(
        store, keys, args.data, ingest=ingest_config(args, shard_size=args.shard_size),
        capture=capture_config(args, progress=False), discover=discover_config(args, progress=False),
        improve=improve_config(args, progress=False),
        map=MapConfig(max_concurrency=args.max_concurrency, tolerated_failure_percentage=args.tolerated_failure),
    )
    print(f"uploaded {store.url}/{keys(manifest.data)} (sha256 {manifest.data_sha256[:12]}) "
          f"and {store.url}/{manifest_key(keys)}")
    print(f"the manifest upload starts the run; follow it with: mycelium status {args.run} --bucket {args.bucket}")
    return 0


def status(args) -> int:
    import boto3

    from ..cloud.status import format_status, run_status, state_machine_arn
    from ..core.store import open_store

    sfn = boto3.client("stepfunctions", region_name=args.region)
    store = open_store(args.store or f"s3://{args.bucket}/runs")
    st = run_status(sfn, store, args.state_machine or state_machine_arn(sfn, args.name), args.run)
    print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    ex = st["execution"]
    return 1 if ex and ex["status"] in ("FAILED", "TIMED_OUT", "ABORTED") else 0


def train(args) -> int:
    from pathlib import Path

    from ..stages.train import run_train
    from ..students.train import TrainOptions, world
    from ..teacher.model import load_teacher

    components = [c.strip().upper() for c in args.components.split(",") if c.strip()]
    bad = [c for c in components if c not in ("C1", "C2", "C3", "C4", "C5", "C6")]
    if bad:
        raise ValueError(f"unknown component(s) {bad}: choose from C1..C6")
    out = Path(args.out or f"models/{args.run}")
    opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        progress=not args.no_progress)
    teacher = load_teacher(args.backbone, device=args.device)
    cache = Path(args.feature_cache) if args.feature_cache else None
    store = _store(args)
    problems = None
    if args.problems:
        from ..core.config import MergeConfig
        from ..core.lineage import read_record
        from ..stages.student import loop_problems

        val_share = MergeConfig.model_validate(read_record(store, RunKeys(args.run), "merge").config).val_share
        problems = set(loop_problems(store, RunKeys(args.run), val_share, args.problems))
    results = run_train(store, args.run, out, teacher, components, opts=opts, feature_cache=cache,
                        from_round=args.round, problems=problems,
                        train_layers=args.train_layers, lora_rank=args.lora_rank, placeholders=args.placeholders,
                        mention_order=args.mention_order,
                        hidden=args.hidden, adapter_layers=args.adapter_layers, dropout=args.dropout)
    if world()[0] != 0:
        return 0
    print(f"{'component':9} {'on val':34} {'baseline (same val examples)'}")
    for c, r in results.items():
        if "skipped" in r:
            print(f"{c:9} skipped: {r['skipped']}")
            continue
        val = ", ".join(f"{k} {v:.3f}" for k, v in r["val"].items())
        print(f"{c:9} {val}   [{r['n_train']} train, {r['n_val']} val, best epoch {r['best_epoch']}, "
              f"{r['examples_per_s']:.0f} ex/s]")
        for name, m in r["baselines"].items():
            print(f"{'':9}   baseline {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    print(f"wrote {out}/<component>/ (model.safetensors, config.json, provenance.json, metrics.json, curve.png)")
    return 0


def solver_options(args):
    """The search's options of ``solve``, ``evaluate`` and ``improve``."""
    from ..solver.solve import SolverOptions

    return SolverOptions(theta=args.theta, width=args.width, budget=args.budget, max_programs=args.max_programs,
                         vote=getattr(args, "vote", 1), fuse=getattr(args, "fuse", 0.0),
                         beam=getattr(args, "beam", 10), choice=getattr(args, "choice", "auto"),
                         verifier=not getattr(args, "no_verifier", False))


def improve_config(args, **runtime):
    """The loop's ImproveConfig from ``improve``'s (and ``submit``'s) options."""
    from ..core.config import ImproveConfig

    teacher = None if args.mop_up_teacher.lower() == "none" else args.mop_up_teacher
    return ImproveConfig(
        rounds=args.rounds, min_gain=args.min_gain, mop_up_teacher=teacher, mop_up_limit=args.mop_up_limit,
        mop_up_max_new_tokens=args.mop_up_max_new_tokens, mop_up_batch=args.mop_up_batch,
        problems=args.loop_problems, val_limit=args.val_limit, part_size=args.part_size,
        backbone=getattr(args, "backbone", "embedded"), theta=args.theta, width=args.width, budget=args.budget,
        max_programs=args.max_programs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        hidden=args.hidden, adapter_layers=args.adapter_layers, verifier=args.verifier, reader=args.reader, **runtime)


def improve(args) -> int:
    from pathlib import Path

    from ..stages.improve import Loop
    from ..stages.rounds import table
    from ..teacher.model import load_teacher

    cfg = improve_config(args, device=args.device, progress=not args.no_progress)
    store = _store(args)
    out = Path(args.out or f"models/{args.run}.improve")
    loop = Loop(store, args.run, cfg, models_root=out, teacher=load_teacher(cfg.backbone, device=cfg.device),
                feature_cache=Path(args.feature_cache) if args.feature_cache else None)
    report = loop.run()
    print(table(report))
    print(f"wrote {store.url}/{args.run}/rounds/improve.json, improve.md, improve.png; students in {out}/r<k>/")
    return 0


def evaluate(args) -> int:
    from pathlib import Path

    from ..evaluation.evaluate import EvalOptions
    from ..evaluation.evaluate import evaluate as run_evaluation
    from ..teacher.model import load_teacher

    opts = EvalOptions(limit=args.limit, cot_limit=args.cot_limit if args.baseline == "cot" else 0,
                       cot_max_new_tokens=args.cot_max_new_tokens, cot_timed=args.cot_timed,
                       cot_batch=args.cot_batch, drop_overlap=args.drop_overlap,
                       labels_run=args.labels_run, progress=not args.no_progress)
    m = run_evaluation(Path(args.models), Path(args.data), Path(args.out), load_teacher(args.backbone),
                       solver_options(args), opts,
                       store=_store(args) if args.labels_run else None, fmt=args.format)
    for line in m["bad"]:
        print(f"skipped: {line}", file=sys.stderr)
    s = m["solver"]
    print(f"{m['n']} problems ({m['bad_rows']} bad rows skipped): solver accuracy {s['accuracy']:.3f} (coverage {s['coverage']:.3f}, "
          f"median {s['latency_ms']['median']:.0f} ms)")
    for name, b in m["baselines"].items():
        extra = (f", median {b['latency_ms']['median']:.0f} ms at batch 1, solver {b['speedup_mean']}x faster"
                 if b.get("timed") else "")
        print(f"  baseline {name}: accuracy {b['accuracy']:.3f}" + (f" on {b['n']}" if "n" in b else "") + extra)
    print(f"wrote {args.out}/report.md, metrics.json, solutions.jsonl and PNGs")
    return 0
