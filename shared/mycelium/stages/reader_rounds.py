"""The reader loop's table (``stages.reader_loop``): one row per round, as JSON, Markdown and a picture."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = (("round", "round"), ("other_programs", "right programs beside the teacher's"),
           ("new_programs", "new this round"), ("train_pass_at_beam", "train pass@beam (cross-fitted)"),
           ("val_pass_at_beam", "val pass@beam"), ("val_last_number", "val last number"),
           ("val_reader", "val reader (beam order)"), ("val_verifier", "val reader + verifier"),
           ("val_weighted_vote", "val weighted vote"), ("verifier_gain", "verifier gain"),
           ("val_auc", "val AUC"), ("val_auc_beam_order", "val AUC of beam order"), ("seconds", "seconds"))
PERCENT = {"train_pass_at_beam", "val_pass_at_beam", "val_last_number", "val_reader", "val_verifier",
           "val_weighted_vote", "verifier_gain"}


def markdown(rows: list[dict]) -> str:
    head = "| " + " | ".join(name for _, name in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    cell = lambda k, v: "" if v is None else f"{100 * v:+.1f} pt" if k == "verifier_gain" else \
        f"{100 * v:.1f} %" if k in PERCENT else f"{v:.3f}" if isinstance(v, float) and k != "seconds" else \
        f"{v:.0f}" if isinstance(v, float) else str(v)  # noqa: E731
    return head + "".join("| " + " | ".join(cell(k, r.get(k)) for k, _ in COLUMNS) + " |\n" for r in rows)


def write_table(work: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(work)
    (work / "rounds.json").write_text(json.dumps(rows, indent=1))
    (work / "rounds.md").write_text(markdown(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ks = [r["round"] for r in rows]
    for k, name in COLUMNS:
        if k in PERCENT - {"verifier_gain", "train_pass_at_beam"}:
            ax.plot(ks, [100 * r[k] for r in rows], "o-", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("% of val problems")
    ax.set_xticks(ks)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(work / "rounds.png", dpi=120)
    plt.close(fig)
