"""Capture one problem: CoT -> one teacher-forced forward pass -> signals chunk.

Never ``generate(output_attentions=True)``: the CoT is produced first (or taken
from the dataset), then a single forward pass over prompt + CoT runs with hooks
on every attention module that reduce each layer's rows to the signals at once,
so only [H, T, ...] per layer is ever kept, not [L, H, N, N].
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from . import signals
from .answers import extract_answer, grade
from .artifacts import Problem, Trace
from .chunk import SIGNAL_NAMES, Chunk
from .config import CaptureConfig
from .errors import AttentionUnavailableError, CaptureError, ConfigError
from .teacher import Teacher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSet:
    """Which attention-over-problem slices a chunk keeps: every layer's head mean + computing heads."""

    n_layers: int
    computing: tuple[tuple[int, int], ...] = ()

    def pairs(self) -> list[tuple[int, int]]:
        return [(layer, -1) for layer in range(self.n_layers)] + list(self.computing)

    def heads_of(self, layer: int) -> list[int]:
        return [h for (l, h) in self.computing if l == layer]


@dataclass
class Tokens:
    """Exact token geometry of prompt + CoT. Offsets are into each piece's own text."""

    prompt_ids: list[int]
    problem_start: int  # first problem token position in the prompt
    problem_offsets: list[tuple[int, int]]  # into problem.question
    prompt_text: str
    cot_ids: list[int] = field(default_factory=list)
    cot_offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def problem_end(self) -> int:
        return self.problem_start + len(self.problem_offsets)


def _tokenize(tokenizer, text: str, untrusted: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    # Dataset and model text must not become control tokens: "<|im_end|>" in a problem is text.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=untrusted)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def prompt_tokens(teacher: Teacher, question: str, parts: tuple[str, str]) -> Tokens:
    """Tokenize chat-template prefix, problem and suffix separately so problem offsets are exact."""
    prefix, suffix = parts
    pre_ids, _ = _tokenize(teacher.tokenizer, prefix, untrusted=False)
    q_ids, q_offsets = _tokenize(teacher.tokenizer, question)
    suf_ids, _ = _tokenize(teacher.tokenizer, suffix, untrusted=False)
    bos = teacher.tokenizer.bos_token_id
    if getattr(teacher.tokenizer, "add_bos_token", False) and bos is not None and (not pre_ids or pre_ids[0] != bos):
        pre_ids = [bos] + pre_ids
    return Tokens(
        prompt_ids=pre_ids + q_ids + suf_ids,
        problem_start=len(pre_ids),
        problem_offsets=q_offsets,
        prompt_text=prefix + question + suffix,
    )


def generate_cot(teacher: Teacher, tokens: Tokens, max_new_tokens: int) -> tuple[str, list[int], bool]:
    """Greedy CoT from the chat prompt: (text, generated ids without EOS, truncated)."""
    import torch

    ids = torch.tensor([tokens.prompt_ids], device=teacher.device)
    eos = teacher.eos_ids()
    with torch.no_grad():
        out = teacher.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, eos_token_id=eos,
            pad_token_id=teacher.tokenizer.pad_token_id if teacher.tokenizer.pad_token_id is not None else eos[0],
        )
    new = out[0, ids.shape[1]:].tolist()
    hit_eos = bool(new) and new[-1] in eos
    if hit_eos:
        new = new[:-1]
    text = teacher.tokenizer.decode(new, skip_special_tokens=True)
    return text, new, (not hit_eos and len(new) >= max_new_tokens)


class AttentionTap(contextlib.AbstractContextManager):
    """Forward hooks that reduce each layer's attention rows to signals as the pass runs.

    The row of CoT token t is the query that *produced* it: position p-1+t (p the
    prompt length), as in step-by-step generation, where the last prompt token's
    row writes the first CoT token. Its keys are the prompt and CoT tokens before t.
    The JSD reference for t = 0 is row p-2. The last position's row (it predicts
    what follows the CoT) is not used.

    Per layer it keeps [H, T] traces of IAF, JSD, entropy and connectivity, the
    head-mean [T, P] and the computing heads' [k, T, P] attention over the
    problem, and at ``hidden_layer`` the [T, d] hidden states. Hooks are removed
    in ``__exit__`` whatever happens.
    """

    def __init__(self, teacher: Teacher, tokens: Tokens, head_set: HeadSet, hidden_layer: int, threshold: float,
                 exclude_first: bool = True, exclude_template: bool = True):
        import torch

        self.teacher, self.head_set, self.hidden_layer, self.threshold = teacher, head_set, hidden_layer, threshold
        n = tokens.prompt_len + len(tokens.cot_ids)
        self.p, self.ps, self.pe = tokens.prompt_len, tokens.problem_start, tokens.problem_end
        dev = teacher.device
        problem = torch.zeros(n, dtype=torch.bool, device=dev)  # [key]
        problem[self.ps:self.pe] = True
        keep = torch.ones(n, dtype=torch.bool, device=dev)  # [key]: non-sink keys
        if exclude_template:
            keep[: self.p] = problem[: self.p]
        if exclude_first:
            keep[0] = False
        self.problem, self.keep = problem, keep
        self.layers: dict[int, dict[str, torch.Tensor]] = {}
        self.hidden = None
        self._handles = []

    def __enter__(self):
        layers = self.teacher.layers()
        for idx, layer in enumerate(layers):
            self._handles.append(layer.self_attn.register_forward_hook(self._attn_hook(idx)))
        self._handles.append(layers[self.hidden_layer].register_forward_hook(self._hidden_hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def _attn_hook(self, idx: int):
        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise AttentionUnavailableError(
                    f"{self.teacher.model_id}: layer {idx} returned no attention weights; load with "
                    "attn_implementation='eager' (sdpa/flash attention ignore output_attentions)"
                )
            rows = weights[0, :, self.p - 2:-1, :].float()  # [head, t_gen+1, key]; row 0 = JSD reference
            rows = signals.renormalize(rows, self.keep)  # [head, t_gen+1, key]
            gen = rows[:, 1:, :]  # [head, t_gen, key]
            over_problem = gen[:, :, self.ps:self.pe]  # [head, t_gen, problem]
            heads = self.head_set.heads_of(idx)
            self.layers[idx] = {
                "iaf": signals.iaf(gen, self.problem),  # [head, t_gen]
                "jsd": signals.consecutive_jsd(rows),  # [head, t_gen]
                "entropy": signals.entropy(gen),  # [head, t_gen]
                "connectivity": signals.connectivity(gen, self.threshold),  # [head, t_gen]
                "mean": over_problem.mean(0, keepdim=True),  # [1, t_gen, problem]
                "heads": over_problem[heads],  # [k_layer, t_gen, problem]
            }

        return hook

    def _hidden_hook(self, module, args, output):
        hs = output[0] if isinstance(output, tuple) else output  # [batch, seq, d]
        self.hidden = hs[0, self.p - 1:-1, :].float()  # [t_gen, d]: the states that produced each CoT token

    def collect(self) -> dict[str, np.ndarray]:
        """Stack the per-layer results: signals [L, H, T], attn_problem [S, T, P] in head_set order."""
        import torch

        n_layers = self.head_set.n_layers
        if sorted(self.layers) != list(range(n_layers)) or self.hidden is None:
            raise AttentionUnavailableError(f"hooks saw layers {sorted(self.layers)} of {n_layers}")
        out = {name: torch.stack([self.layers[i][name] for i in range(n_layers)]) for name in SIGNAL_NAMES}
        means = torch.cat([self.layers[i]["mean"] for i in range(n_layers)])  # [L, T, P]
        by_pair = {(i, h): self.layers[i]["heads"][j] for i in range(n_layers) for j, h in enumerate(self.head_set.heads_of(i))}
        comp = [by_pair[pair] for pair in self.head_set.computing]
        out["attn_problem"] = torch.cat([means, torch.stack(comp)]) if comp else means  # [S, T, P]
        fp16_max = float(torch.finfo(torch.float16).max)
        out["hidden"] = self.hidden.clamp(-fp16_max, fp16_max)  # a large activation must not become inf
        return {k: v.detach().to("cpu", torch.float16).numpy() for k, v in out.items()}


def forward_signals(teacher: Teacher, tokens: Tokens, head_set: HeadSet, cfg: CaptureConfig) -> dict[str, np.ndarray]:
    """One teacher-forced forward pass over prompt + CoT; returns the reduced arrays."""
    import torch

    n = tokens.prompt_len + len(tokens.cot_ids)
    if n > teacher.context_len:
        raise CaptureError("?", f"prompt + CoT is {n} tokens, over the teacher's context of {teacher.context_len}")
    ids = torch.tensor([tokens.prompt_ids + tokens.cot_ids], device=teacher.device)  # [1, seq]
    hidden_layer = resolve_hidden_layer(cfg, teacher.n_layers)
    tap = AttentionTap(teacher, tokens, head_set, hidden_layer, cfg.signals.connectivity_threshold,
                       cfg.signals.exclude_first_token, cfg.signals.exclude_template_tokens)
    decoder = teacher.model.get_decoder() if hasattr(teacher.model, "get_decoder") else teacher.model
    with torch.no_grad(), tap:
        decoder(input_ids=ids, use_cache=False)  # the LM head is not needed
    return tap.collect()


def resolve_hidden_layer(cfg: CaptureConfig, n_layers: int) -> int:
    layer = n_layers // 2 if cfg.hidden_layer is None else cfg.hidden_layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"hidden_layer {layer} out of range for a {n_layers}-layer teacher")
    return layer


def build_tokens(teacher: Teacher, problem: Problem, cfg: CaptureConfig, parts: tuple[str, str],
                 generated=None) -> tuple[Tokens, dict]:
    """Prompt + CoT tokens (generated or reference) and CoT facts for the trace.

    ``generated`` is a CoT made beforehand (``generation.GeneratedCot``, e.g. by vLLM); else HF generates it.
    """
    tokens = prompt_tokens(teacher, problem.question, parts)
    facts: dict = {"truncated": False, "retokenized_equal": None}
    if cfg.cot == "reference":
        if not problem.solution:
            raise CaptureError(problem.id, "--cot reference, but the problem has no reference solution")
        cot_text = problem.solution
    else:
        if generated is not None:
            cot_text, gen_ids, truncated = generated.text, generated.ids, generated.truncated
        else:
            cot_text, gen_ids, truncated = generate_cot(teacher, tokens, cfg.max_new_tokens)
        facts["truncated"] = truncated
    tokens.cot_ids, tokens.cot_offsets = _tokenize(teacher.tokenizer, cot_text)
    if cfg.cot == "generate":
        facts["retokenized_equal"] = tokens.cot_ids == gen_ids
    if not tokens.cot_ids:
        raise CaptureError(problem.id, "empty chain of thought")
    facts["cot_text"] = cot_text
    return tokens, facts


def capture_problem(teacher: Teacher, problem: Problem, cfg: CaptureConfig, head_set: HeadSet,
                    parts: tuple[str, str], config_hash: str, generated=None) -> tuple[Trace, Chunk]:
    tokens, facts = build_tokens(teacher, problem, cfg, parts, generated)
    try:
        arrays = forward_signals(teacher, tokens, head_set, cfg)
    except CaptureError as e:
        raise CaptureError(problem.id, e.reason) from e
    answer = extract_answer(facts["cot_text"])
    correct, note = grade(problem.answer, answer)
    trace = Trace(
        problem_id=problem.id, question=problem.question, dataset=problem.source.dataset, subject=problem.subject,
        level=problem.level, model_id=teacher.model_id, cot_source=cfg.cot, prompt_text=tokens.prompt_text,
        prompt_len=tokens.prompt_len, problem_token_start=tokens.problem_start, problem_token_end=tokens.problem_end,
        problem_offsets=tokens.problem_offsets, cot_text=facts["cot_text"], cot_token_ids=tokens.cot_ids,
        cot_offsets=tokens.cot_offsets, truncated=facts["truncated"], retokenized_equal=facts["retokenized_equal"],
        answer_extracted=answer, correct=correct, grade_note=note,
    )
    meta = {
        "problem_id": problem.id, "model_id": teacher.model_id, "config_hash": config_hash,
        "dataset": problem.source.dataset, "prompt_len": tokens.prompt_len, "problem_token_start": tokens.problem_start,
        "n_problem_tokens": len(tokens.problem_offsets), "t_gen": len(tokens.cot_ids),
        "hidden_layer": resolve_hidden_layer(cfg, teacher.n_layers), "signals": cfg.signals.model_dump(),
        "signals_version": cfg.signals_version,
    }
    chunk = Chunk(meta=meta, head_set=np.array(head_set.pairs(), dtype=np.int16).reshape(-1, 2),
                  cot_token_ids=np.array(tokens.cot_ids, dtype=np.int32), **arrays)
    return trace, chunk


@dataclass
class Calibration:
    problem_ids: list[str]
    scores: list[list[float]]  # [L][H] mean telegraph score
    computing_heads: list[tuple[int, int]]
    method: str = "top-k heads by mean std over CoT tokens of the head's IAF trace (mycelium.signals.telegraph_score)"

    def to_json(self) -> dict:
        return {"problem_ids": self.problem_ids, "scores": self.scores, "method": self.method,
                "computing_heads": [list(p) for p in self.computing_heads]}

    @classmethod
    def from_json(cls, obj: dict) -> "Calibration":
        return cls(problem_ids=obj["problem_ids"], scores=obj["scores"], method=obj["method"],
                   computing_heads=[tuple(p) for p in obj["computing_heads"]])


def calibrate(teacher: Teacher, problems: list[Problem], cfg: CaptureConfig, parts: tuple[str, str]) -> Calibration:
    """Find the computing heads: those whose IAF switches most between reading the problem and not."""
    means_only = HeadSet(teacher.n_layers)
    scores, used = [], []
    for problem in problems:
        try:
            tokens, _ = build_tokens(teacher, problem, cfg, parts)
            arrays = forward_signals(teacher, tokens, means_only, cfg)
        except CaptureError as e:
            log.warning("calibration skips %s: %s", problem.id, e)
            continue
        scores.append(signals.telegraph_score(arrays["iaf"].astype(np.float32)))  # [L, H]
        used.append(problem.id)
    if not scores:
        raise CaptureError("calibration", "no calibration problem could be captured")
    mean = np.mean(scores, axis=0)  # [L, H]
    k = min(cfg.n_computing_heads, mean.size)
    top = np.argsort(-mean, axis=None, kind="stable")[:k]
    heads = sorted((int(i) // mean.shape[1], int(i) % mean.shape[1]) for i in top)
    return Calibration(problem_ids=used, scores=np.round(mean, 6).tolist(), computing_heads=heads)
