"""The taxonomy: templates and families cut from the anneal's split tree, and how to print it.

The split tree is cut where a split's gain falls below the threshold (or at the
elbow of the gain curve); templates smaller than ``min_size`` rejoin their parent
(surface tension). Families are the same cut at twice the gain.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..core.config import DiscoverConfig
from ..core.infotheory import entropy, js, mutual_information as _mi
from .ib import Anneal
from .steps import StepTable


Group = tuple[int, ...]  # a template: the tree nodes whose memberships it sums


def _walk(an: Anneal, gain: float) -> tuple[list, list[Group]]:
    """From the root through every split whose gain is at least ``gain``: (the splits taken, the leaves reached)."""
    by_parent = {s.parent: s for s in an.splits}
    taken, leaves, stack = [], [], [0]
    while stack:
        node = stack.pop()
        split = by_parent.get(node)
        if split is not None and split.gain >= gain:
            taken.append(split)
            stack.extend(split.children)
        else:
            leaves.append((node,))
    return taken, sorted(leaves)


def cut(an: Anneal, gain: float) -> list[Group]:
    """Templates: descend the split tree through every split whose gain is at least ``gain``."""
    return _walk(an, gain)[1]


def beta_of_cut(an: Anneal, gain: float) -> dict:
    """What a gain threshold is: a β threshold. A split's gain is about c/β (``gain_times_beta`` gives c's
    range over all splits), so "gain ≥ g" keeps the splits the anneal made up to some β. Returns the β range
    of the splits the cut takes and the β of the first split below it that it does not take."""
    taken, leaves = _walk(an, gain)
    heads = {g[0] for g in leaves}
    dropped = [s.beta for s in an.splits if s.parent in heads]
    products = [s.gain * s.beta for s in an.splits if s.gain > 0]
    kept_max = max((s.beta for s in taken), default=None)
    first_dropped = min(dropped, default=None)
    return {"beta_kept": [min((s.beta for s in taken), default=None), kept_max],
            "beta_first_dropped": first_dropped,
            # a true β threshold drops nothing below the largest β it keeps; on MATH this does not hold
            "is_a_beta_threshold": kept_max is None or first_dropped is None or first_dropped > kept_max,
            "gain_times_beta": [min(products, default=None), max(products, default=None)]}


def elbow_gain(an: Anneal) -> float:
    """The gain threshold at the elbow of cumulative ΔI(T;Y) over splits taken in order of gain."""
    gains = sorted((s.gain for s in an.splits), reverse=True)
    if len(gains) < 3:
        return gains[-1] if gains else 1.0
    by_gain = sorted(an.splits, key=lambda s: -s.gain)
    y = np.cumsum([s.delta_ity for s in by_gain])
    x = np.arange(1, len(y) + 1)
    xn, yn = (x - x[0]) / (x[-1] - x[0]), (y - y[0]) / max(y[-1] - y[0], 1e-12)
    above = yn - xn
    knee = int(np.argmax(above))  # furthest above the chord
    if above[knee] < 0.05:  # a straight line has no elbow: every split counts
        return gains[-1]
    return gains[knee]


def _label_dist(an: Anneal, group: Group) -> np.ndarray:
    q = sum(an.membership(n) for n in group) * an.px  # [N]
    return q @ an.pyx / max(q.sum(), 1e-300)


def surface_tension(an: Anneal, templates: list[Group], min_size: int) -> tuple[list[Group], list[dict]]:
    """Templates with fewer than ``min_size`` steps rejoin the tree, smallest first.

    Where the sibling is itself a template the two merge (the parent again); else the small
    one joins the template in its sibling's subtree whose label distribution is closest (JS),
    so one small early split cannot fold every template below its parent.
    """
    absorbed = []
    templates = list(templates)
    while len(templates) > 1:
        sizes = _hard_sizes(an, templates)
        small = [(n, g) for g, n in zip(templates, sizes) if n < min_size]
        if not small:
            break
        n, g = min(small)
        head = g[0]
        sibling = None
        if head in an.parent:
            kids = an.children[an.parent[head]]
            sibling = kids[1] if kids[0] == head else kids[0]
        candidates = [t for t in templates if t != g and sibling is not None and any(an._descends(x, sibling) for x in t)]
        if not candidates:
            candidates = [t for t in templates if t != g]
        mine = _label_dist(an, g)
        target = min(candidates, key=lambda t: js(mine, _label_dist(an, t)))
        merged = tuple(sorted(set(g) | set(target)))
        if len(target) == 1 and target[0] == sibling:
            merged = (an.parent[head],)  # both children of one split: the parent node itself
        absorbed.append({"template": template_name(g), "size": int(n), "into": template_name(target), "now": template_name(merged)})
        templates = sorted([t for t in templates if t not in (g, target)] + [merged])
    return templates, absorbed


def template_name(group: Group) -> str:
    return "T" + "+".join(str(n) for n in group)


def memberships(an: Anneal, groups: list[Group]) -> np.ndarray:
    return np.stack([sum(an.membership(n) for n in g) for g in groups], 1)  # [N, T]


def _hard_sizes(an: Anneal, groups: list[Group]) -> list[int]:
    hard = memberships(an, groups).argmax(1)
    return np.bincount(hard, minlength=len(groups)).tolist()


def relevance(an: Anneal, groups: list[Group]) -> float:
    """I(T;Y) of the soft partition into ``groups``, in nats."""
    q = memberships(an, groups)  # [N, T]
    return _mi((q * an.px[:, None]).T @ an.pyx)  # [T, V] joint of template and label


def build_taxonomy(an: Anneal, table: StepTable, cfg: DiscoverConfig, gain: float, how: str) -> dict:
    templates, absorbed = surface_tension(an, cut(an, gain), cfg.min_size)
    families, _ = surface_tension(an, cut(an, 2 * gain), cfg.min_size)
    q = memberships(an, templates)  # [N, T]
    hard = q.argmax(1)
    confidence = q.max(1)
    label_sets = ["+".join(r["labels"]) for r in table.index]
    entries, purity_hits = [], 0
    for i, t in enumerate(templates):
        members = np.flatnonzero(hard == i)
        y = table.Y[members].mean(0) if len(members) else np.zeros(len(table.vocab))
        sets = Counter(label_sets[m] for m in members)
        top_set, top_n = sets.most_common(1)[0] if sets else ("", 0)
        purity_hits += top_n
        best = members[np.argsort(-confidence[members], kind="stable")[: cfg.examples]]
        entries.append({
            "id": template_name(t), "nodes": list(t), "size": int(len(members)), "mass": float(an.px @ q[:, i]),
            "dominant_ops": [[table.vocab[j], round(float(y[j]), 4)] for j in np.argsort(-y)[:3] if y[j] > 0],
            "label_sets": dict(sets.most_common(5)), "purity": top_n / len(members) if len(members) else 0.0,
            "entropy_y_bits": abs(float(entropy(y))) / np.log(2),
            "examples": [{k: table.index[m][k] for k in ("problem_id", "step", "problem_span", "expression", "text")}
                         for m in best],
        })
    fam_hard = memberships(an, families).argmax(1)  # each template's family: where most of its steps are
    fam_of = [int(np.bincount(fam_hard[hard == i], minlength=len(families)).argmax()) if (hard == i).any() else 0
              for i in range(len(templates))]
    fam_entries = []
    for f in sorted(set(fam_of)):
        members = [e for e, ff in zip(entries, fam_of) if ff == f]
        fam_entries.append({"id": template_name(families[f]).replace("T", "F", 1), "nodes": list(families[f]),
                            "size": sum(e["size"] for e in members), "templates": members})
    n = len(table.index)
    return {
        "schema_version": 1, "operating_point": {"how": how, "gain": gain, "min_size": cfg.min_size,
                                                 **beta_of_cut(an, gain)},
        "n_steps": n, "labels": table.vocab, "n_templates": len(templates), "n_families": len(fam_entries),
        "h_y_nats": an.h_y, "i_ty_nats": relevance(an, templates),
        "purity": purity_hits / n if n else 0.0,
        "beta_c_predicted": an.beta_c, "beta_first_split": an.splits[0].beta if an.splits else None,
        "absorbed": absorbed, "families": fam_entries,
        "templates_at_gain": {str(g): len(surface_tension(an, cut(an, g), cfg.min_size)[0]) for g in (0.3, 0.2, 0.15, 0.1)},
        "config": cfg.output_fields(),  # the hashed fields: a default-valued option added later is not listed
    }


def format_tree(taxonomy: dict) -> str:
    op = taxonomy["operating_point"]
    beta = ""
    if op.get("beta_kept", [None, None])[1]:
        beta = (f", i.e. the splits up to β = {op['beta_kept'][1]:.3g}" if op.get("is_a_beta_threshold", True) else
                f", splits up to β = {op['beta_kept'][1]:.3g} but one at β = {op['beta_first_dropped']:.3g} dropped")
    lines = [f"taxonomy: {taxonomy['n_templates']} templates in {taxonomy['n_families']} families from "
             f"{taxonomy['n_steps']} steps (gain ≥ {op['gain']:.3g} by {op['how']}{beta}, "
             f"min size {op['min_size']}); "
             f"I(T;Y) {taxonomy['i_ty_nats']:.3f} of H(Y) {taxonomy['h_y_nats']:.3f} nats, purity {taxonomy['purity']:.2f}"]
    for fam in taxonomy["families"]:
        lines.append(f"├─ {fam['id']} ({fam['size']} steps)")
        for t in fam["templates"]:
            ops = ", ".join(f"{o} {p:.2f}" for o, p in t["dominant_ops"])
            ex = t["examples"][0] if t["examples"] else {}
            lines.append(f"│  ├─ {t['id']}: {t['size']} steps, ops [{ops}], H(Y) {t['entropy_y_bits']:.2f} bits, "
                         f"purity {t['purity']:.2f}" + (f" — e.g. {ex.get('expression')!s} ← {ex.get('problem_span')!r}" if ex else ""))
    return "\n".join(lines)


def operating_point(an: Anneal, cfg: DiscoverConfig) -> tuple[float, str]:
    """(gain threshold, how it was chosen): the elbow of the gain curve, or the config's ``gain``."""
    return (elbow_gain(an), "elbow") if cfg.elbow else (cfg.gain, "threshold")
