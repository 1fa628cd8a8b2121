"""The ``mycelium`` command line.

    mycelium capture --data FILE [--limit N] [--cot reference|generate] [--store URL] [--run NAME]
    mycelium inspect --run NAME PROBLEM_ID [--store URL]
    mycelium analyze --run NAME [--store URL] [--workers N]
    mycelium show --run NAME PROBLEM_ID [--store URL]
    mycelium aggregate --run NAME [--store URL]
    mycelium discover --run NAME [--gain 0.15 | --elbow] [--min-size 50] [--distinct-rows] [--ib-dtype float32] [--store URL]
    mycelium label --run NAME [--augment K] [--store URL]
    mycelium merge --run NAME [--val-share 0.1] [--store URL]
    mycelium train --run NAME [--components C1,...] [--out models/NAME] [--backbone embedded|PATH] [--train-layers K [--lora-rank R]] [--placeholders] [--epochs N]
    mycelium train-reader --programs annotations|run:NAME [--data FILE] [--out DIR] [--epochs N] [--limit N] [--train-layers K [--lora-rank R]]
    mycelium improve-reader --programs annotations|run:NAME [--data FILE] [--start DIR] [--work DIR] [--rounds N] [--ship DIR]
    mycelium solve [--models DIR] "problem text" | --data FILE [--limit N] [--json] [--beam W] [--choice verifier|weighted|beam]
    mycelium evaluate --models DIR --data FILE --out DIR [--limit N] [--baseline cot] [--labels-run NAME]
    mycelium improve --run NAME [--rounds N] [--min-gain 0.01] [--mop-up-teacher embedded|PATH|none] [--problems N]
    mycelium deploy --bucket B [--region R] [--spot] [--max-vcpus N] [--vllm VERSION] [--synth]
    mycelium submit --data FILE --run NAME --bucket B [--limit N] [--cot ...] [--teacher ...] [--rounds N ...]
    mycelium status NAME --bucket B [--region R]
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from ..core import env
from ..core.errors import MyceliumError
from . import commands, solving
from .docs import EPILOG, describe

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "students"  # `make students` writes, `solve` reads


def _capture_options(p: argparse.ArgumentParser) -> None:
    """The dataset and teacher options of ``capture`` (local) and ``submit`` (AWS)."""
    p.add_argument("--data", required=True, help="JSONL file: GSM8K, MATH or {question, answer}")
    p.add_argument("--format", default="auto", choices=["auto", "gsm8k", "math", "plain"])
    p.add_argument("--limit", type=int, default=None, help="capture the first N good problems")
    p.add_argument("--cot", default="reference", choices=["reference", "generate"],
                   help="reference: the dataset's solution text; generate: greedy CoT from the teacher")
    p.add_argument("--max-new-tokens", type=int, default=512, help="token budget for generated CoT")
    p.add_argument("--generate-batch", type=int, default=1,
                   help="generated CoTs made at once (several times faster on a CPU; 1 is exact single greedy)")
    p.add_argument("--teacher", default="embedded", help="'embedded' (SmolLM2-135M-Instruct) or a local HF model "
                                                          "dir (on AWS: a dir inside the capture image)")
    p.add_argument("--n-computing-heads", type=int, default=8)
    p.add_argument("--computing-heads", default=None, help="explicit heads 'layer:head,...' (skips calibration)")
    p.add_argument("--hidden-layer", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="the teacher's precision (auto: bfloat16 on a GPU, float32 on a CPU); a run keeps one")
    p.add_argument("--capture-batch", type=int, default=None,
                   help="problems per teacher-forced pass (padded; the signals equal one problem's at a time); "
                        "default 8 on a GPU, 1 on a CPU")
    p.add_argument("--chunk-format", type=int, default=None, choices=[1, 2],
                   help="chunk layout (default: the run's own when it has one, else 2, quantised; 1 is float16)")


def _discover_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gain", type=float, default=None, help="operating point: keep splits with at least this gain (0.15)")
    p.add_argument("--min-size", type=int, default=None, help="surface tension: smaller templates rejoin their parent (50)")
    p.add_argument("--elbow", action="store_true", help="operating point at the elbow of the gain curve instead")
    p.add_argument("--distinct-rows", action="store_true",
                   help="anneal over the distinct rows of p(y|x), each with its steps' mass: the same taxonomy to "
                        "rounding, much faster where smoothed labels repeat (a new lineage)")
    p.add_argument("--ib-dtype", default=None, choices=["float64", "float32"],
                   help="precision of the anneal (float64; float32 is faster and equivalent: a new lineage)")


def _improve_options(p: argparse.ArgumentParser) -> None:
    """The self-improving loop's options of ``improve`` (local) and ``submit`` (AWS)."""
    p.add_argument("--rounds", type=int, default=3, help="improvement rounds at most (0: round 0 only)")
    p.add_argument("--min-gain", type=float, default=0.01, help="stop when val accuracy gains less than this")
    p.add_argument("--mop-up-teacher", default="embedded",
                   help="the teacher asked (generated CoT) about what nothing solved: 'embedded', a local HF model "
                        "dir (a larger teacher: the hybrid strategy), or 'none'")
    p.add_argument("--mop-up-limit", type=int, default=None, help="teacher calls per round at most")
    p.add_argument("--mop-up-max-new-tokens", type=int, default=512)
    p.add_argument("--mop-up-batch", type=int, default=8, help="CoTs generated at once")
    p.add_argument("--problems", dest="loop_problems", type=int, default=None,
                   help="the first N train-split problems only (by id)")
    p.add_argument("--val-limit", type=int, default=None, help="the first N val-split problems only (by id)")
    p.add_argument("--part-size", type=int, default=25, help="problems per solver call (a map item on AWS)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--adapter-layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--theta", type=float, default=0.9)
    p.add_argument("--width", type=int, default=3)
    p.add_argument("--budget", type=int, default=400)
    p.add_argument("--max-programs", type=int, default=24, help="programs executed per problem at most")
    p.add_argument("--verifier", action="store_true", help="each round, the reader's beams of its problems teach a "
                   "verifier (beside the round's students)")
    p.add_argument("--reader", default=None, help="the reader whose beams teach it (default: the shipped one)")


def _on_run(sub, name: str, func, help: str, problem: bool = False) -> argparse.ArgumentParser:
    """A command that works on one run of a store (and, with ``problem``, one problem of it)."""
    p = sub.add_parser(name, help=help)
    if problem:
        p.add_argument("problem_id")
    p.add_argument("--run", required=True)
    p.add_argument("--store", default=None, help=f"runs/ (default, or ${env.STORE_URL}), file://DIR or s3://bucket/prefix")
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mycelium", description="Mycelium: distil a teacher's reasoning structure "
                                     "into small solvers (the pipeline's stages, the students, the solver, AWS).",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("capture", help="ingest a dataset and capture the teacher's attention, one chunk per problem")
    _capture_options(cap)
    cap.add_argument("--device", default="auto")
    cap.add_argument("--store", default=None, help=f"runs/ (default, or ${env.STORE_URL}), file://DIR or s3://bucket/prefix")
    cap.add_argument("--run", default="default", help="run name; outputs under <store>/<run>/")
    cap.add_argument("--no-progress", action="store_true")
    cap.set_defaults(func=commands.capture)

    _on_run(sub, "inspect", commands.inspect, "print one problem's CoT with token boundaries and write an attention "
            "heat map", problem=True)
    ana = _on_run(sub, "analyze", commands.analyze, "map the per-chunk analysis over a run's chunks (one process per core)")
    ana.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    ana.add_argument("--peak-prominence", type=float, default=None, help="JSD peak prominence, in trace std units")
    ana.add_argument("--peak-distance", type=int, default=None, help="minimum tokens between boundaries")
    ana.add_argument("--heartbeat-threshold", type=float, default=None)
    ana.add_argument("--heartbeat-min-run", type=int, default=None)
    ana.add_argument("--jsd-layers", default=None, help="comma-separated layers for the JSD trace (default: the first half)")
    ana.add_argument("--segmentation", default=None, choices=["jsd", "lines", "sentences", "jsd_lines"],
                     help="the steps later stages read (docs/measurements.md)")
    ana.add_argument("--heartbeat-signal", default=None, choices=["iaf", "iaf_over_chance"])
    ana.add_argument("--no-progress", action="store_true")
    lab = _on_run(sub, "label", commands.label, "each analysed problem's program, kept when it executes to the "
                  "dataset's answer; the specialists' examples")
    lab.add_argument("--augment", type=int, default=None, help="variants with re-sampled numbers per kept program (0)")
    lab.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    lab.add_argument("--no-progress", action="store_true")
    mrg = _on_run(sub, "merge", commands.merge, "examples -> training/<component>/{train,val}.jsonl, split by problem")
    mrg.add_argument("--val-share", type=float, default=None, help="share of problems in val (0.1)")
    trn = _on_run(sub, "train", commands.train, "train the specialists C1..C6 on a run's merged examples "
                  "(also under torchrun: DDP)")
    trn.add_argument("--components", default="C1,C2,C3,C4,C5,C6")
    trn.add_argument("--out", default=None, help="models/<run> by default")
    trn.add_argument("--backbone", default="embedded", help="'embedded' or a local Hugging Face model dir")
    trn.add_argument("--train-layers", type=int, default=0, help="top backbone layers to train (0: cached features)")
    trn.add_argument("--lora-rank", type=int, default=0,
                     help="train LoRA adapters of this rank on the top layers instead of the layers themselves")
    trn.add_argument("--placeholders", action="store_true",
                     help="the backbone reads the text with its numbers as N0, N1, ... (offsets stay in the original)")
    trn.add_argument("--mention-order", action="store_true",
                     help="C3's operand pointers also see each number's place among the problem's numbers")
    trn.add_argument("--feature-cache", help="a directory of encoded texts, read and extended (a second run on the "
                     "same problems skips the backbone)")
    trn.add_argument("--round", type=int, default=0, help="an improvement round's merged data (`mycelium improve`)")
    trn.add_argument("--problems", type=int, default=None,
                     help="train on the first N train-split problems only (by id; the improvement loop's problems)")
    trn.add_argument("--epochs", type=int, default=8)
    trn.add_argument("--batch-size", type=int, default=32, help="global batch (split over torchrun's ranks)")
    trn.add_argument("--lr", type=float, default=1e-3)
    trn.add_argument("--hidden", type=int, default=256, help="the adapter's width")
    trn.add_argument("--adapter-layers", type=int, default=2)
    trn.add_argument("--dropout", type=float, default=0.1)
    trn.add_argument("--seed", type=int, default=0)
    trn.add_argument("--device", default="auto")
    trn.add_argument("--no-progress", action="store_true")
    rd = sub.add_parser("train-reader", help="train the reader (C3 + C5: the step decoder) on step programs, with a "
                        "checkpoint every epoch")
    rd.add_argument("--programs", default="annotations", help="annotations: the dataset's own <<a*b=c>> "
                    "calculations, string-matched (GSM8K); run:NAME: the teacher's programs of a labelled run")
    rd.add_argument("--data", default=None, help="the dataset file whose annotations are the programs (annotations)")
    rd.add_argument("--out", default=str(SHIPPED / "reader"), help="where the reader is written (default: the "
                    "shipped students, where `mycelium solve` looks)")
    rd.add_argument("--work", default="runs/checkpoints/reader", help="checkpoint.pt and best.pt (resumable state, "
                    "kept out of --out)")
    rd.add_argument("--val-share", type=float, default=0.1, help="share of problems (by id hash, merge's rule) in val")
    rd.add_argument("--epochs", type=int, default=10)
    rd.add_argument("--batch-size", type=int, default=32)
    rd.add_argument("--lr", type=float, default=1e-3)
    rd.add_argument("--limit", type=int, default=None, help="train on the first N train programs")
    rd.add_argument("--train-layers", type=int, default=0, help="the backbone's top K layers trained with the "
                    "reader (0: frozen features only); they are saved with it")
    rd.add_argument("--lora-rank", type=int, default=0, help="with --train-layers: LoRA adapters of this rank on "
                    "those layers instead (only the adapters are saved)")
    rd.add_argument("--top-lr", type=float, default=1e-4, help="peak learning rate of the trained backbone layers")
    rd.add_argument("--augment", type=int, default=0, help="variants per train program with its numbers re-sampled "
                    "and the program re-computed (the variants' texts are encoded too)")
    rd.add_argument("--feature-cache", default="runs/.features", help="encoded texts on disk (a second run skips "
                    "the backbone)")
    rd.add_argument("--store", default=None)
    rd.add_argument("--backbone", default="embedded")
    rd.add_argument("--no-progress", action="store_true")
    rd.set_defaults(func=solving.train_reader)
    il = sub.add_parser("improve-reader", help="the reader's loop: cross-fitted beams teach the verifier, every right "
                        "program in them joins the reader's training; rounds until val stops gaining")
    il.add_argument("--programs", default="annotations", help="the teacher's programs: annotations (of --data) or "
                    "run:NAME")
    il.add_argument("--data", default=None, help="the dataset file (its answers label the beams)")
    il.add_argument("--start", default=str(SHIPPED / "reader"), help="round 0's reader (default: the shipped one)")
    il.add_argument("--work", default="runs/reader-loop", help="every round's readers, beams and verifier (resumable)")
    il.add_argument("--ship", default=None, help="copy the best round's verifier (and reader) here, e.g. "
                    "shared/mycelium/data/students")
    il.add_argument("--rounds", type=int, default=2, help="rounds after round 0 at most")
    il.add_argument("--min-gain", type=float, default=0.005, help="stop when the verifier's val top-1 gains less")
    il.add_argument("--beam", type=int, default=10, help="beam width")
    il.add_argument("--fold-epochs", type=int, default=6, help="round 0's fold readers (from scratch)")
    il.add_argument("--epochs", type=int, default=2, help="each later round's readers (from the round before)")
    il.add_argument("--verifier-epochs", type=int, default=6)
    il.add_argument("--val-share", type=float, default=0.1)
    il.add_argument("--feature-cache", default="runs/.features")
    il.add_argument("--backbone", default="embedded")
    il.add_argument("--store", default=None, help="where run:NAME is (runs/ by default)")
    il.add_argument("--no-progress", action="store_true")
    il.set_defaults(func=solving.improve_reader)
    tv = _on_run(sub, "train-verifier", solving.train_verifier, "an improvement round's verifier from the reader's "
                 "beams in the store (the AWS training job runs it)")
    tv.add_argument("--round", type=int, default=0)
    tv.add_argument("--out", required=True, help="the verifier goes to OUT/verifier")
    tv.add_argument("--no-progress", action="store_true")
    sol = sub.add_parser("solve", help="answer problems with the trained students and sympy (no chain of thought)")
    sol.add_argument("text", nargs="?", help="one problem's text")
    sol.add_argument("--data", help="JSONL of problems (GSM8K, MATH or {question}); only the question is read")
    sol.add_argument("--format", default="auto", choices=["auto", "gsm8k", "math", "plain"])
    sol.add_argument("--limit", type=int, default=None)
    sol.add_argument("--models", default=str(SHIPPED), help="a reader (`make students`) or the directory "
                     "`mycelium train` wrote (default: the shipped students)")
    sol.add_argument("--beam", type=int, default=10, help="the reader's beam width")
    sol.add_argument("--choice", default="auto", choices=["auto", "verifier", "weighted", "beam"],
                     help="with a verifier beside the reader: its best candidate, the beam's mass weighted by its "
                     "scores, the beam's first; auto: of the first two, the better on val (the verifier's metrics)")
    sol.add_argument("--no-verifier", action="store_true", help="the reader alone, even with a verifier beside it")
    sol.add_argument("--backbone", default="embedded")
    sol.add_argument("--json", action="store_true", help="one JSON object per problem")
    sol.add_argument("--theta", type=float, default=0.9, help="decisions below this confidence branch")
    sol.add_argument("--budget", type=int, default=400, help="partial programs the search may expand")
    sol.add_argument("--width", type=int, default=3, help="alternatives kept at a decision below θ")
    sol.add_argument("--max-programs", type=int, default=24, help="complete programs the search may execute")
    sol.add_argument("--vote", type=int, default=1, help="pool this many computing programs by their answer")
    sol.add_argument("--fuse", type=float, default=0.0, help="weight of C1, C4 and C5 on C3's operand pointers")
    sol.set_defaults(func=solving.solve)
    ev = sub.add_parser("evaluate", help="the solver on a test split, graded, beside the same backbone's chain of "
                        "thought; with --labels-run, error attribution and the oracle ladder")
    ev.add_argument("--models", required=True, help="the directory `mycelium train` wrote")
    ev.add_argument("--data", required=True, help="a test split (GSM8K or MATH JSONL); its problems must not be in "
                    "the students' training data (checked by content hash)")
    ev.add_argument("--format", default="auto", choices=["auto", "gsm8k", "math", "plain"])
    ev.add_argument("--out", required=True, help="report.md, metrics.json, solutions.jsonl and PNGs go here")
    ev.add_argument("--limit", type=int, default=None)
    ev.add_argument("--baseline", default="cot", choices=["cot", "none"],
                    help="cot: the same backbone writing a chain of thought, greedy, on the first --cot-limit problems")
    ev.add_argument("--cot-limit", type=int, default=200)
    ev.add_argument("--cot-max-new-tokens", type=int, default=512)
    ev.add_argument("--cot-timed", type=int, default=20, help="CoT problems generated one at a time (the latency)")
    ev.add_argument("--cot-batch", type=int, default=16, help="the rest are generated this many at a time")
    ev.add_argument("--labels-run", default=None, help="a run of these problems captured with their reference "
                    "solutions and analysed (attribution and the oracle ladder only; the solver never reads it)")
    ev.add_argument("--store", default=None, help="where --labels-run and the training run are (runs/ by default)")
    ev.add_argument("--drop-overlap", action="store_true",
                    help="drop problems found in the training data instead of stopping")
    ev.add_argument("--beam", type=int, default=10, help="the reader's beam width")
    ev.add_argument("--choice", default="auto", choices=["auto", "verifier", "weighted", "beam"],
                     help="with a verifier beside the reader: its best candidate, the beam's mass weighted by its "
                     "scores, the beam's first; auto: of the first two, the better on val (the verifier's metrics)")
    ev.add_argument("--no-verifier", action="store_true", help="the reader alone, even with a verifier beside it")
    ev.add_argument("--backbone", default="embedded")
    ev.add_argument("--theta", type=float, default=0.9)
    ev.add_argument("--budget", type=int, default=400)
    ev.add_argument("--width", type=int, default=3)
    ev.add_argument("--max-programs", type=int, default=24)
    ev.add_argument("--vote", type=int, default=1)
    ev.add_argument("--fuse", type=float, default=0.0)
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=commands.evaluate)
    imp = _on_run(sub, "improve", commands.improve, "the self-improving loop: the students label the training "
                  "problems they solve (execution verifies), the teacher only the rest; retrain until val stops gaining")
    _improve_options(imp)
    imp.add_argument("--out", default=None, help="each round's students go to <out>/r<k>/ (models/<run>.improve)")
    imp.add_argument("--backbone", default="embedded")
    imp.add_argument("--feature-cache", default=None, help="a directory of encoded texts, read and extended")
    imp.add_argument("--device", default="auto")
    imp.add_argument("--no-progress", action="store_true")
    _on_run(sub, "show", commands.show, "one analysed problem: mapped spans (terminal + HTML) and a PNG of its traces",
            problem=True)
    _on_run(sub, "aggregate", commands.aggregate, "collect a run's labelled steps into the IB inputs (ib/steps.npz)")
    dis = _on_run(sub, "discover", commands.discover, "operation templates by the Information Bottleneck "
                  "(ib/taxonomy.json)")
    _discover_options(dis)
    dis.add_argument("--no-progress", action="store_true")

    dep = sub.add_parser("deploy", help="deploy the AWS stacks (cdk deploy with Mycelium's context)")
    dep.add_argument("--bucket", required=True, help="the runs bucket's globally unique name (created by the deploy)")
    dep.add_argument("--region", default=None)
    dep.add_argument("--name", default="mycelium", help="prefix of the functions and the state machine")
    dep.add_argument("--spot", action="store_true", help="run capture on Spot g5 instances")
    dep.add_argument("--max-vcpus", type=int, default=None, help="g5 capacity of the compute environment (64)")
    dep.add_argument("--vllm", default=None, help="a vLLM version to install in the capture image")
    dep.add_argument("--train-gpus", type=int, default=None, choices=[4, 8],
                     help="A10Gs per training job: 4 (g5.12xlarge) or 8 (g5.48xlarge, the default)")
    dep.add_argument("--synth", action="store_true", help="only synthesize the templates (cdk synth)")
    dep.set_defaults(func=commands.deploy)

    sbm = sub.add_parser("submit", help="upload a dataset and its run manifest: on AWS the upload starts the run")
    sbm.add_argument("--run", required=True)
    sbm.add_argument("--bucket", required=True)
    sbm.add_argument("--store", default=None, help="instead of s3://BUCKET/runs (e.g. a local directory)")
    _capture_options(sbm)
    sbm.add_argument("--shard-size", type=int, default=1000, help="problems per capture array element")
    _discover_options(sbm)
    _improve_options(sbm)
    sbm.add_argument("--max-concurrency", type=int, default=200, help="chunks analysed at once")
    sbm.add_argument("--tolerated-failure", type=float, default=5.0, help="percent of chunks that may fail")
    sbm.set_defaults(func=commands.submit)

    sta = sub.add_parser("status", help="a cloud run's execution, its analyze map-run counts and its capture jobs")
    sta.add_argument("run")
    sta.add_argument("--bucket", required=True)
    sta.add_argument("--region", default=None)
    sta.add_argument("--name", default="mycelium")
    sta.add_argument("--state-machine", default=None, help="ARN (default: the deployed <name>-pipeline)")
    sta.add_argument("--store", default=None)
    sta.add_argument("--json", action="store_true")
    sta.set_defaults(func=commands.status)
    for action in parser._subparsers._group_actions:  # each subcommand's --help: what it reads and writes
        helps = {a.dest: a.help for a in action._choices_actions}
        for name, p in action.choices.items():
            p.description = describe(name, helps.get(name) or "")
            p.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "accelerate", "botocore", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    try:
        return args.func(args)
    except (MyceliumError, ValueError) as e:
        print(f"mycelium {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished chunks are kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
