"""What each ``mycelium`` subcommand reads and writes, in the words of ``docs/`` (shown by ``--help``)."""

from __future__ import annotations

#: subcommand -> (reads, writes, the docs page that says more)
IO = {
    "capture": ("a JSONL dataset (GSM8K, MATH or {question, answer}) and the teacher",
                "<store>/<run>/problems/, traces/<pid>.json, chunks/<pid>.npz (chunk v2), capture/calibration.json",
                "docs/pipeline.md"),
    "inspect": ("one problem's trace and chunk", "<run>/inspect/<pid>.png (an attention heat map)", "docs/signals.md"),
    "analyze": ("<run>/chunks/ and traces/ (committed captures)",
                "<run>/signals/<pid>.json, steps/<pid>.jsonl, analyze/report.json and heartbeats.png", "docs/signals.md"),
    "show": ("one problem's signals and steps", "<run>/show/<pid>.html and .png", "docs/signals.md"),
    "aggregate": ("<run>/steps/", "<run>/ib/steps.npz, ib/index.jsonl (the IB inputs)", "docs/templates.md"),
    "discover": ("<run>/ib/steps.npz", "<run>/ib/taxonomy.json, ib/templates.npz, ib/*.png (the templates)",
                 "docs/templates.md"),
    "label": ("<run>/steps/, signals/ and ib/ (the templates)",
              "<run>/labels/<pid>.json (the program or why there is none), examples/<pid>.jsonl", "docs/students.md"),
    "merge": ("<run>/examples/", "<run>/training/<C>/{train,val}.jsonl, training/stats.json", "docs/students.md"),
    "train": ("<run>/training/ and the backbone", "models/<run>/<C>/ (weights, config, provenance, metrics, curve)",
              "docs/students.md"),
    "train-reader": ("step programs (a dataset's annotations, or a labelled run's labels/) and the backbone",
                     "DIR/{model.safetensors, config.json, provenance.json, metrics.json, trained_on.txt, curve.png}; "
                     "WORK/checkpoint.pt and best.pt (a cut-off run resumes)", "docs/students.md"),
    "improve-reader": ("the teacher's step programs (annotations or a run's), the dataset's answers, a reader (--start)",
                       "WORK/r<k>/{reader, fold0, fold1, beams-train, beams-val, verifier, programs.jsonl, round.json}; "
                       "WORK/rounds.{json,md,png}, best.json; with --ship the best verifier (and reader)", "docs/loop.md"),
    "train-verifier": ("an improvement round's beams in the store (rounds/r<k>/beams/) and the backbone",
                       "OUT/verifier/{model.safetensors, config.json, provenance.json, metrics.json, curve.png}",
                       "docs/loop.md"),
    "solve": ("problem text or a JSONL file (only the question), and the students (--models)",
              "answers with their programs to stdout (--json: one object per problem); counts to stderr",
              "docs/solver.md"),
    "evaluate": ("a test JSONL, the students, and with --labels-run a labelled run of the test split",
                 "OUT/{metrics.json, report.md, solutions.jsonl, cot.jsonl, *.png}", "docs/solver.md"),
    "improve": ("a labelled training run and its students",
                "<run>/rounds/r<k>/ (labels, training data, models, val), rounds/improve.json", "docs/loop.md"),
    "deploy": ("the CDK app (app.py, stacks/) and AWS credentials", "the deployed stacks (S3, Lambda, Step Functions, "
               "Batch)", "docs/aws.md"),
    "submit": ("a JSONL dataset", "s3://BUCKET/runs/<run>/input/<file>, then runs/<run>/manifest.json (starts the run)",
               "docs/aws.md"),
    "status": ("a cloud run's execution, map runs and status/ objects", "a summary to stdout", "docs/aws.md"),
}

EPILOG = """The pipeline, in order: capture -> analyze -> aggregate -> discover -> label -> merge -> train /
train-reader -> solve, evaluate -> improve. Every stage reads and writes under <store>/<run>/ (runs/ by
default, or s3://bucket/prefix), is idempotent and resumes where it stopped. The same stages run on AWS
(deploy, submit, status). More: README.md and docs/."""


def describe(name: str, summary: str) -> str:
    """A subcommand's --help description: what it does, reads and writes, and where the docs say more."""
    reads, writes, page = IO[name]
    return f"{summary}\n\nreads:  {reads}\nwrites: {writes}\nmore:   {page}"
