"""The attention tap: forward hooks that reduce each layer's generation-phase attention rows to signals
during one teacher-forced pass, so only [H, T, ...] per layer is ever kept, not [L, H, N, N].

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
                "entropy": entropy(gen),  # [head, t_gen]
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
