"""What the reader's beam holds, from one evaluation's solutions (the same beams for every row):

    python benchmarks/reader_beam.py reports/reader-gsm8k-test/solutions.jsonl

Rows: the most probable program's value (what the solver answers), the value with the most pooled probability
(a vote over the beam's finished programs), a right value anywhere in the beam (pass@beam, the ceiling of any
reranker), and where in the beam the first right value stands. The gold answer is read here, after solving, by
the exact grader only.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main() -> int:
    from mycelium.evaluation.grading import exact_equal

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "reports/reader-gsm8k-test/solutions.jsonl")
    if not path.is_file():
        print(f"skipped: {path} is absent (run `make evaluate`)")
        return 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    top = vote = anywhere = 0
    rank: Counter = Counter()
    for r in rows:
        beam = r["trace"].get("beam", [])
        right = [bool(exact_equal(r["gold"], b["value"])) for b in beam]
        top += bool(right and right[0])
        if beam:
            vote += right[max(range(len(beam)), key=lambda i: beam[i]["mass"])]
        anywhere += any(right)
        rank[next((i for i, x in enumerate(right) if x), "none")] += 1
    n = len(rows)
    print(f"{n} problems ({path})")
    print("| answer from the beam | accuracy |\n|---|---|")
    print(f"| the most probable program (the solver's answer) | {top / n:.1%} |")
    print(f"| the value with the most pooled probability (vote) | {vote / n:.1%} |")
    print(f"| a right value anywhere in the beam (pass@beam) | {anywhere / n:.1%} |")
    print("first right value at beam rank: " + ", ".join(f"{k}: {v}" for k, v in sorted(
        rank.items(), key=lambda kv: (kv[0] == "none", kv[0] if kv[0] != "none" else 0))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
