"""The baseline in the same run: the solver's own backbone writing a chain of thought, greedy, one problem at a time.

The prompt is the teacher's chat template with a system line asking for the final answer in ``\\boxed{}``
(the most a 135M model can be helped to make its answer findable); the answer is the CoT's last ``\\boxed{}``,
else ``####``, else "the answer is", else its last number (``mathlang.answers.extract_answer``). Latency is
wall time per problem at batch size 1, the same way the solver is timed, on the first problems; the rest are
generated in batches (accuracy only, many times the throughput on a CPU).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..mathlang.answers import extract_answer
from ..solver.solve import Question

SYSTEM = "Solve the problem step by step, then put your final answer within \\boxed{}."


@dataclass(frozen=True)
class CotAnswer:
    id: str
    answer: str | None
    tokens: int
    truncated: bool
    ms: float
    text: str
    batch: int  # generated with this many others (1: ms is its latency)


def cot_answers(teacher, questions: list[Question], max_new_tokens: int = 512, batch: int = 16, timed: int = 20,
                progress: bool = True) -> list[CotAnswer]:
    """Greedy CoTs and their answers. The first ``timed`` problems are generated one at a time (their ``ms`` is the
    latency per problem); the rest ``batch`` at a time for throughput (``ms`` is then the batch's time over its
    size, and a near tie between two tokens can break differently than at batch 1: ``generate_cots``)."""
    from tqdm import tqdm

    from ..teacher.generation import generate_cots
    from ..teacher.tokens import prompt_tokens

    parts = teacher.prompt_parts(SYSTEM)
    out = []
    bar = tqdm(total=len(questions), desc="chain of thought", unit="problem", disable=not progress)
    i = 0
    while i < len(questions):
        size = 1 if i < timed else batch
        group = questions[i:i + size]
        t0 = time.perf_counter()
        cots = generate_cots(teacher, [prompt_tokens(teacher, q.text, parts).prompt_ids for q in group], max_new_tokens)
        ms = (time.perf_counter() - t0) * 1000 / len(group)
        out += [CotAnswer(q.id, extract_answer(c.text), len(c.ids), c.truncated, ms, c.text, len(group))
                for q, c in zip(group, cots)]
        bar.update(len(group))
        i += len(group)
    bar.close()
    return out
