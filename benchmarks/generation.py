#!/usr/bin/env python3
"""Batched greedy CoT generation against one problem at a time, on the embedded teacher, in one run.

    .venv/bin/python benchmarks/generation.py [--n 8] [--tokens 96]

Prints both wall times, their ratio, and whether every batched CoT has the same token ids as the
problem's own greedy CoT (a batch of one is exactly single greedy generation; see generate_cots).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
SAMPLE = ROOT / "shared" / "mycelium" / "data" / "sample_problems.jsonl"


def main() -> int:
    from mycelium.records.datasets import read_dataset
    from mycelium.teacher.generation import generate_cots
    from mycelium.teacher.model import load_teacher
    from mycelium.teacher.tokens import prompt_tokens

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=96)
    args = ap.parse_args()
    teacher = load_teacher("embedded", device="cpu")
    data = GSM8K if GSM8K.is_file() else SAMPLE
    problems = [p for _, p in zip(range(args.n), read_dataset(data))]
    parts = teacher.prompt_parts()
    prompts = [prompt_tokens(teacher, p.question, parts).prompt_ids for p in problems]
    t0 = time.perf_counter()
    batched = generate_cots(teacher, prompts, args.tokens)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [generate_cots(teacher, [p], args.tokens)[0] for p in prompts]
    t_alone = time.perf_counter() - t0
    same = sum(a.ids == b.ids for a, b in zip(alone, batched))
    print(f"{len(prompts)} problems of {data.name}, up to {args.tokens} tokens each")
    print(f"batched: {t_batch:.1f} s; one at a time: {t_alone:.1f} s; ratio {t_alone / t_batch:.2f}x; "
          f"identical token ids: {same}/{len(prompts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
