"""A trained specialist on disk, ``<out>/<component>/``: weights, config, provenance, metrics, training curve.

``model.safetensors`` (the student's own parameters: top backbone layers when trained, adapter, heads),
``config.json`` (the StudentConfig, with the vocabularies and the backbone's id), ``provenance.json`` (the
training data's sha256 and lineage, the options), ``metrics.json`` (val metrics beside the baselines') and
``curve.png``. Loading checks the config and the backbone it is given and refuses a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ConfigError
from .encode import backbone_id
from .model import Student, StudentConfig
from .top import check_loaded, copy_top, trained_state


def build(cfg: StudentConfig, teacher=None) -> Student:
    """A fresh student; with ``train_layers`` K > 0, the top K layers and the final norm are copies of the
    backbone's (``top.copy_top``: trainable, or frozen under LoRA adapters with ``lora_rank``)."""
    if cfg.lora_rank and not cfg.train_layers:
        raise ConfigError(f"{cfg.component}: lora_rank={cfg.lora_rank} adapts the top layers: set train_layers > 0")
    if cfg.train_layers == 0:
        return Student(cfg)
    if teacher is None:
        raise ConfigError(f"{cfg.component}: train_layers={cfg.train_layers} needs the backbone")
    top, norm, rotary = copy_top(teacher.model, cfg.train_layers, cfg.lora_rank)
    return Student(cfg, top, norm, rotary, teacher.config)


def save(model: Student, out: Path, provenance: dict, metrics: dict, curve: list[dict]) -> Path:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(trained_state(model), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1))
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _plot(curve, model.cfg.component, out / "curve.png")
    return out


def load(path: Path, teacher) -> Student:
    """The student saved in ``path``, for ``teacher``'s backbone; a ConfigError names what does not match."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: no saved student (config.json missing)")
    raw = json.loads((path / "config.json").read_text())
    try:
        cfg = StudentConfig(**raw)
    except TypeError as e:
        raise ConfigError(f"{path}/config.json: not a student config this version reads ({e})") from None
    expected = backbone_id(teacher)
    if cfg.backbone != expected:
        raise ConfigError(f"{path}: trained on backbone {cfg.backbone!r}, not {expected!r}")
    model = build(cfg, teacher)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    check_loaded(model, missing, unexpected, path)
    model.eval()
    return model


def _plot(curve: list[dict], component: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    epochs = [e["epoch"] for e in curve]
    ax.plot(epochs, [e["loss"] for e in curve], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    metric_keys = [k for k in (curve[0] if curve else {}) if k not in ("epoch", "loss")]
    if metric_keys:
        ax2 = ax.twinx()
        for k in metric_keys:
            ax2.plot(epochs, [e[k] for e in curve], "s--", label=f"val {k}")
        ax2.set_ylabel("val metric")
        ax2.legend(loc="lower right", fontsize=7)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"{component}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TRAINED_ON = "trained_on.txt"


def write_trained_on(out: Path, questions) -> Path:
    """``<out>/trained_on.txt``: the content hash (the problem id of ``records.datasets.problem_id``) of every
    question the students read in training or validation, one per line, so evaluation can prove its test
    problems are not among them. Extended, never shrunk: components trained into one directory in two runs."""
    from ..records.datasets import problem_id

    path = Path(out) / TRAINED_ON
    ids = {problem_id(q) for q in questions}
    if path.is_file():
        ids |= set(path.read_text().split())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(i + "\n" for i in sorted(ids)))
    return path


def read_trained_on(models_dir: Path) -> set[str]:
    path = Path(models_dir) / TRAINED_ON
    if not path.is_file():
        raise ConfigError(f"{path}: missing, so no overlap check between the evaluation data and the training data "
                          "is possible (students trained before it was written: retrain, or write it with "
                          "`mycelium.students.saved.write_trained_on` from the training run's examples)")
    return set(path.read_text().split())


def files_digest(root: Path, names: list[str], missing: str) -> str:
    """12 hex digits naming the files ``names`` under ``root`` by content; a missing one is a ConfigError that
    says ``missing``."""
    import hashlib

    h = hashlib.sha256()
    for name in names:
        path = Path(root) / name
        if not path.is_file():
            raise ConfigError(f"{path}: missing ({missing})")
        h.update(f"{name}\t{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()[:12]


def models_digest(models_dir: Path) -> str:
    """12 hex digits naming the six students of ``models_dir`` by content (weights and configs)."""
    from ..records.programs import COMPONENTS

    return files_digest(models_dir, [f"{c}/{n}" for c in COMPONENTS for n in ("config.json", "model.safetensors")],
                        "train the six students first: `mycelium train`")
