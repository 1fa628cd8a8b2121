"""The backbone's top K decoder layers, copied from it and trained in a student (``--train-layers K``).

The bottom ``L - K`` layers stay frozen and their output is cached (``encode.frozen_features``); the top K run
in the student on that output, causal with the backbone's rotary positions, and end in the backbone's final
norm, so untrained they give exactly the backbone's last hidden state. With ``lora_rank`` the copied layers stay
frozen and peft's LoRA adapters on their projections are trained instead (the saved weights are then the
adapters alone: ``trained_state``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: The projections of a Llama-shaped layer that LoRA adapts (attention and MLP).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def copy_top(backbone, k: int, lora_rank: int = 0) -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """Copies of ``backbone``'s top ``k`` layers and final norm (trainable, or frozen under LoRA adapters of
    rank ``lora_rank``), and its rotary embedding (shared: it has no weights)."""
    decoder = backbone.get_decoder() if hasattr(backbone, "get_decoder") else backbone
    if not 0 < k <= len(decoder.layers):
        raise ValueError(f"train_layers {k} out of range for a {len(decoder.layers)}-layer backbone")
    top = nn.ModuleList(copy.deepcopy(list(decoder.layers[-k:])))
    if lora_rank:
        from peft import LoraConfig, inject_adapter_in_model

        for p in top.parameters():
            p.requires_grad_(False)
        top = inject_adapter_in_model(LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                                 target_modules=LORA_TARGETS), top)
    return top, copy.deepcopy(decoder.norm), decoder.rotary_emb


def run_top(layers: nn.ModuleList, norm: nn.Module, rotary: nn.Module, config, x: torch.Tensor,
            mask: torch.Tensor) -> list[torch.Tensor]:
    """Each top layer's output for x [B, T, d] (right-padded, ``mask`` [B, T]); the last after the final norm."""
    from transformers.masking_utils import create_causal_mask

    pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0).expand(x.shape[0], -1)
    causal = create_causal_mask(config=config, inputs_embeds=x, attention_mask=mask.long(),
                                past_key_values=None, position_ids=pos)
    rope = rotary(x, position_ids=pos)
    out = []
    for layer in layers:
        x = layer(x, attention_mask=causal, position_embeddings=rope, position_ids=pos)
        out.append(x)
    out[-1] = norm(out[-1])
    return out


def copied(model: nn.Module) -> set[str]:
    """The state a saved model leaves out because building it copies them from the backbone again: the rotary
    embedding's buffers and, under LoRA, the frozen layers' weights."""
    return {n for n, p in model.named_parameters() if not p.requires_grad} | \
        {n for n, _ in model.named_buffers() if n.startswith("rotary.")}


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's state to save (all but ``copied``)."""
    skip = copied(model)
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in skip}


def check_loaded(model: nn.Module, missing: list[str], unexpected: list[str], path) -> None:
    """A ConfigError unless the weights loaded into ``model`` were exactly its state less ``copied``."""
    from ..core.errors import ConfigError

    missing = [k for k in missing if k not in copied(model)]
    if missing or unexpected:
        raise ConfigError(f"{path}: weights do not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
