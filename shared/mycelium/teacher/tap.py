"""The attention tap: forward hooks that reduce each layer's generation-phase attention rows to signals
during one teacher-forced pass over a batch of problems, so only [B, H, T, ...] per layer is ever kept, not
[L, B, H, N, N].

Never ``generate(output_attentions=True)``: the CoT is produced first (or taken from the dataset).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..analysis import signals
from ..core.config import CaptureConfig
from ..core.errors import AttentionUnavailableError, CaptureError, ConfigError
from ..core.infotheory import entropy
from ..records.chunk import SIGNAL_NAMES
from .model import Teacher
from .tokens import Tokens


@dataclass(frozen=True)
class HeadSet:
    """Which attention-over-problem slices a chunk keeps: every layer's head mean + computing heads."""

    n_layers: int
    computing: tuple[tuple[int, int], ...] = ()

    def pairs(self) -> list[tuple[int, int]]:
        return [(layer, -1) for layer in range(self.n_layers)] + list(self.computing)

    def heads_of(self, layer: int) -> list[int]:
        return [h for (l, h) in self.computing if l == layer]


class AttentionTap(contextlib.AbstractContextManager):
    """Forward hooks that reduce each layer's attention rows to signals as the pass runs, for a batch.

    The batch is right-padded: causal attention keeps every real row of a problem blind to the padding
    after it, so each problem's signals are its one-problem pass's (up to float rounding).

    The row of CoT token t is the query that *produced* it: position p-1+t (p the
    prompt length), as in step-by-step generation, where the last prompt token's
    row writes the first CoT token. Its keys are the prompt and CoT tokens before t.
    The JSD reference for t = 0 is row p-2. The last position's row (it predicts
    what follows the CoT) is not used.

    Per layer it keeps [B, H, T] traces of IAF, JSD, entropy and connectivity, the
    head-mean [B, T, P] and the computing heads' [B, k, T, P] attention over the
    problem, and at ``hidden_layer`` the [B, T, d] hidden states (T, P the batch's
    longest; :meth:`collect` cuts each problem's own). Hooks are removed in
    ``__exit__`` whatever happens.
    """

    def __init__(self, teacher: Teacher, batch: list[Tokens], head_set: HeadSet, hidden_layer: int, threshold: float,
                 exclude_first: bool = True, exclude_template: bool = True):
        import torch

        self.teacher, self.head_set, self.hidden_layer, self.threshold = teacher, head_set, hidden_layer, threshold
        dev = teacher.device
        self.n = [tok.prompt_len + len(tok.cot_ids) for tok in batch]
        self.t_gen = [len(tok.cot_ids) for tok in batch]
        self.n_problem = [tok.problem_end - tok.problem_start for tok in batch]
        width, t_max, p_max = max(self.n), max(self.t_gen), max(max(self.n_problem), 1)
        key = torch.arange(width, device=dev)  # [key]
        p = torch.tensor([tok.prompt_len for tok in batch], device=dev)[:, None]  # [B, 1]
        ps = torch.tensor([tok.problem_start for tok in batch], device=dev)[:, None]
        pe = torch.tensor([tok.problem_end for tok in batch], device=dev)[:, None]
        n = torch.tensor(self.n, device=dev)[:, None]
        self.problem = (key >= ps) & (key < pe)  # [B, key]
        keep = key < n  # [B, key]: non-sink keys of each problem's own sequence
        if exclude_template:
            keep &= (key >= p) | self.problem
        if exclude_first:
            keep &= key > 0
        self.keep = keep
        # Row r of the pass for (problem b, t): p_b - 2 + t, t = 0..T (row 0 is the JSD reference); past a
        # problem's end the index repeats its last row (those entries are cut away in collect).
        t = torch.arange(t_max + 1, device=dev)
        self.rows = torch.minimum(p - 2 + t, n - 2).clamp_min(0)  # [B, T+1]
        self.hid_rows = torch.minimum(p - 1 + t[:-1], n - 2).clamp_min(0)  # [B, T]
        self.keys = torch.minimum(ps + torch.arange(p_max, device=dev), n - 1)  # [B, P]: problem keys
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
            B, H, _, N = weights.shape
            index = self.rows[:, None, :, None].expand(B, H, -1, N)
            rows = weights.gather(2, index).float()  # [B, head, T+1, key]; row 0 = JSD reference
            rows = signals.renormalize(rows, self.keep[:, None, None, :])  # [B, head, T+1, key]
            h_rows = entropy(rows)  # [B, head, T+1]
            gen = rows[:, :, 1:, :]  # [B, head, T, key]
            keys = self.keys[:, None, None, :].expand(B, H, gen.shape[2], -1)
            over_problem = gen.gather(3, keys)  # [B, head, T, problem]
            heads = self.head_set.heads_of(idx)
            self.layers[idx] = {
                "iaf": signals.iaf(gen, self.problem[:, None, None, :]),  # [B, head, T]
                "jsd": signals.consecutive_jsd(rows, h_rows),  # [B, head, T]
                "entropy": h_rows[:, :, 1:],  # [B, head, T]
                "connectivity": signals.connectivity(gen, self.threshold),  # [B, head, T]
                "mean": over_problem.mean(1),  # [B, T, problem]
                "heads": over_problem[:, heads],  # [B, k_layer, T, problem]
            }

        return hook

    def _hidden_hook(self, module, args, output):
        hs = output[0] if isinstance(output, tuple) else output  # [B, seq, d]
        index = self.hid_rows[:, :, None].expand(-1, -1, hs.shape[-1])
        self.hidden = hs.gather(1, index).float()  # [B, T, d]: the states that produced each CoT token

    def collect(self) -> list[dict[str, np.ndarray]]:
        """Per problem: signals [L, H, T], attn_problem [S, T, P] in head_set order, hidden [T, d]."""
        import torch

        n_layers = self.head_set.n_layers
        if sorted(self.layers) != list(range(n_layers)) or self.hidden is None:
            raise AttentionUnavailableError(f"hooks saw layers {sorted(self.layers)} of {n_layers}")
        out = {name: torch.stack([self.layers[i][name] for i in range(n_layers)], 1) for name in SIGNAL_NAMES}
        means = torch.stack([self.layers[i]["mean"] for i in range(n_layers)], 1)  # [B, L, T, P]
        by_pair = {(i, h): self.layers[i]["heads"][:, j] for i in range(n_layers)
                   for j, h in enumerate(self.head_set.heads_of(i))}
        comp = [by_pair[pair] for pair in self.head_set.computing]
        out["attn_problem"] = torch.cat([means, torch.stack(comp, 1)], 1) if comp else means  # [B, S, T, P]
        fp16_max = float(torch.finfo(torch.float16).max)
        out["hidden"] = self.hidden.clamp(-fp16_max, fp16_max)  # a large activation must not become inf
        host = {k: v.detach().to("cpu", torch.float16).numpy() for k, v in out.items()}
        cut = {"attn_problem": lambda a, t, p: a[:, :t, :p], "hidden": lambda a, t, p: a[:t]}
        return [{k: cut.get(k, lambda a, t, p: a[..., :t])(v[b], t, p) for k, v in host.items()}
                for b, (t, p) in enumerate(zip(self.t_gen, self.n_problem))]


def forward_signals(teacher: Teacher, tokens: Tokens, head_set: HeadSet, cfg: CaptureConfig) -> dict[str, np.ndarray]:
    """One teacher-forced forward pass over prompt + CoT; returns the reduced arrays."""
    (arrays,) = forward_batch(teacher, [tokens], head_set, cfg)
    return arrays


def forward_batch(teacher: Teacher, batch: list[Tokens], head_set: HeadSet,
                  cfg: CaptureConfig) -> list[dict[str, np.ndarray]]:
    """One teacher-forced pass over several problems' prompt + CoT (right-padded); their reduced arrays."""
    import torch

    lengths = [tok.prompt_len + len(tok.cot_ids) for tok in batch]
    for n in lengths:
        if n > teacher.context_len:
            raise CaptureError("?", f"prompt + CoT is {n} tokens, over the teacher's context of {teacher.context_len}")
    width = max(lengths)
    pad = teacher.tokenizer.pad_token_id if teacher.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([tok.prompt_ids + tok.cot_ids + [pad] * (width - n) for tok, n in zip(batch, lengths)],
                       device=teacher.device)  # [B, seq]
    mask = torch.arange(width, device=teacher.device)[None, :] < torch.tensor(lengths, device=teacher.device)[:, None]
    hidden_layer = resolve_hidden_layer(cfg, teacher.n_layers)
    tap = AttentionTap(teacher, batch, head_set, hidden_layer, cfg.signals.connectivity_threshold,
                       cfg.signals.exclude_first_token, cfg.signals.exclude_template_tokens)
    decoder = teacher.model.get_decoder() if hasattr(teacher.model, "get_decoder") else teacher.model
    with torch.no_grad(), tap:
        decoder(input_ids=ids, attention_mask=mask.long(), use_cache=False)  # the LM head is not needed
    return tap.collect()


def resolve_hidden_layer(cfg: CaptureConfig, n_layers: int) -> int:
    layer = n_layers // 2 if cfg.hidden_layer is None else cfg.hidden_layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"hidden_layer {layer} out of range for a {n_layers}-layer teacher")
    return layer
