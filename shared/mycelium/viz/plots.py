"""The PNGs of the reports: heartbeats by dataset and level, the IB information plane and gains per split."""

from __future__ import annotations

import io

import numpy as np


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def heartbeats_png(report: dict) -> bytes:
    """Heartbeats per problem by dataset / level: distribution (dots sized by count) and mean."""
    groups = list(report["heartbeats"].items())
    fig, ax = pyplot().subplots(figsize=(max(4, 1.3 * len(groups)), 4))
    for i, (_, g) in enumerate(groups):
        values = [int(k) for k in g["counts"]]
        sizes = [6 * c for c in g["counts"].values()]
        ax.scatter([i] * len(values), values, s=sizes, alpha=0.35, color="tab:blue")
        ax.plot([i - 0.3, i + 0.3], [g["mean"]] * 2, color="tab:red", lw=2)
        ax.annotate(f"{g['mean']:.2f}\nn={g['n']}", (i + 0.32, g["mean"]), fontsize=7, va="center")
    ax.set_xticks(range(len(groups)), [name for name, _ in groups], rotation=20, fontsize=8)
    ax.set_ylabel("heartbeats per problem")
    ax.set_title("Heartbeats (computing heads' IAF pulses); red: mean")
    return png(fig)


def information_plane_png(history: list[dict], h_y: float) -> bytes:
    """I(T;Y) against I(X;T) along the anneal, coloured by log10 beta."""
    fig, ax = pyplot().subplots(figsize=(6, 4.5))
    sc = ax.scatter([r["ixt"] for r in history], [r["ity"] for r in history],
                    c=np.log10([r["beta"] for r in history]), cmap="viridis", s=14)
    ax.plot([r["ixt"] for r in history], [r["ity"] for r in history], color="grey", lw=0.6)
    ax.axhline(h_y, color="tab:red", ls=":", lw=1, label="H(Y)")
    ax.set_xlabel("I(X;T) (nats)")
    ax.set_ylabel("I(T;Y) (nats)")
    ax.set_title("Information plane along the anneal")
    fig.colorbar(sc, label="log10 beta")
    ax.legend(loc="lower right")
    return png(fig)


def gains_png(splits: list[dict], taxonomy: dict) -> bytes:
    """Each split's gain against the number of clusters after it, with the operating point."""
    fig, ax = pyplot().subplots(figsize=(6, 4.5))
    splits = sorted(splits, key=lambda s: s["n_clusters"])
    ax.plot([s["n_clusters"] for s in splits], [s["gain"] for s in splits], "o-", ms=4)
    g = taxonomy["operating_point"]["gain"]
    ax.axhline(g, color="tab:red", ls="--", lw=1, label=f"gain threshold {g:.3g} ({taxonomy['operating_point']['how']})")
    ax.axvline(taxonomy["n_templates"], color="tab:green", ls=":", lw=1, label=f"{taxonomy['n_templates']} templates")
    ax.set_xlabel("clusters after the split")
    ax.set_ylabel("gain ΔI(T;Y) / ΔI(X;T)")
    ax.set_title("Gain per split")
    ax.legend()
    return png(fig)


def improvement_png(rows: list[dict]) -> bytes:
    """The improvement loop per round: val accuracy (beside the last-number baseline), train examples by source,
    teacher calls, and the share of training problems still without a program."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    trained = [r for r in rows if "val_accuracy" in r]
    rounds = [r["round"] for r in trained]
    ax = axes[0]
    ax.plot(rounds, [100 * r["val_accuracy"] for r in trained], "o-", label="students + sympy")
    ax.plot(rounds, [100 * r["val_last_number"] for r in trained], "s--", color="grey", label="last number (trivial)")
    ax.set(xlabel="round", ylabel="val accuracy (%)", title="val accuracy")
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    ax = axes[1]
    bottom = np.zeros(len(trained))
    for source in ("teacher", "augmented", "mop-up", "student"):
        counts = np.array([r.get("examples_by_source", {}).get(source, 0) for r in trained], dtype=float)
        if counts.any():
            ax.bar(rounds, counts, bottom=bottom, label=source)
            bottom += counts
    ax.set(xlabel="round", ylabel="train examples", title="examples by source")
    ax.set_xticks(rounds)
    ax.legend(fontsize=8)
    ax = axes[2]
    every = [r["round"] for r in rows]
    ax.bar(every, [r["teacher_calls"] for r in rows], color="tab:orange", label="teacher calls")
    ax.set(xlabel="round", ylabel="teacher calls", title="teacher calls and problems still failing")
    ax.set_xticks(every)
    twin = ax.twinx()
    twin.plot(every, [100 * r["still_failing"] for r in rows], "o-", color="tab:red", label="still failing (%)")
    twin.set_ylabel("still failing (%)")
    twin.set_ylim(0, 100)
    return png(fig)
