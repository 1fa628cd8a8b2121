"""Stage 5, discover (a reduce): the IB anneal over the run's current ``ib/`` table -> ``ib/taxonomy.json`` + plots.

The table must be the aggregate of the current analyze outputs (its commit's lineage says so); a stale
one is an error that says to run aggregate again. The taxonomy records the lineage it came from.
"""

from __future__ import annotations

from ..core.config import DiscoverConfig
from ..core.errors import MyceliumError
from ..core.store import json_bytes
from ..core.summary import StageSummary
from ..templates.ib import anneal, smooth_labels
from ..templates.assign import TemplateIndex
from ..templates.taxonomy import build_taxonomy, cut, memberships, operating_point, surface_tension, template_name
from .aggregate import load_table
from .base import Outputs, ReduceStage, SkipItem


class DiscoverStage(ReduceStage):
    name = "discover"
    after = "aggregate"
    config_type = DiscoverConfig

    def process(self, item: str) -> Outputs:
        from ..viz.plots import gains_png, information_plane_png

        try:
            table = load_table(self)
        except SkipItem as s:
            raise MyceliumError(f"run {self.keys.run!r}: no current ib/steps.npz ({s}): "
                                f"run `mycelium aggregate --run {self.keys.run}` first") from None
        cfg = self.config
        an = anneal(smooth_labels(table.X, table.Y, cfg), cfg)
        gain, how = operating_point(an, cfg)
        taxonomy = build_taxonomy(an, table, cfg, gain, how)
        index = template_index(an, table, taxonomy, cfg)
        taxonomy["splits"] = [s.to_json() for s in an.splits]
        taxonomy["anneal"] = an.history
        taxonomy["lineage"] = self.lineage
        k = self.keys
        return Outputs(
            files={k("ib", "taxonomy.json"): json_bytes(taxonomy),
                   k("ib", "information_plane.png"): information_plane_png(an.history, an.h_y),
                   k("ib", "gains.png"): gains_png(taxonomy["splits"], taxonomy),
                   k("ib", "templates.npz"): index.to_bytes()},
            counters={"families": taxonomy["n_families"], "splits": len(an.splits),
                      "purity": round(taxonomy["purity"], 4)},
            detail={"templates": taxonomy["n_templates"], "families": taxonomy["n_families"],
                    "purity": taxonomy["purity"]},
            summary=StageSummary(n_in=len(table.index), n_out=taxonomy["n_templates"]),
        )


def template_index(an, table, taxonomy: dict, cfg: DiscoverConfig) -> TemplateIndex:
    """The taxonomy's templates as centroids in X, fitted on the steps discovery saw (their hard templates)."""
    templates, _ = surface_tension(an, cut(an, taxonomy["operating_point"]["gain"]), cfg.min_size)
    hard = memberships(an, templates).argmax(1)
    ids = [template_name(t) for t in templates]
    return TemplateIndex.fit(table.X, hard, ids, cfg.pca_dims)
