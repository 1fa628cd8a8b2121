"""Frozen, validated stage configs. The config hash names a stage's outputs.

>>> cfg = CaptureConfig(cot="reference", n_computing_heads=4)
>>> len(cfg.hash())
12
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .versions import ANALYSIS_VERSION, CHUNK_FORMAT_VERSION, SIGNALS_VERSION


def digest(payload) -> str:
    """12 hex digits of the SHA-256 of a JSON-able payload (keys sorted): how configs and lineages are named."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Fields that change how a stage runs but never what it writes. Everything else is in the hash.
    _runtime_only: frozenset[str] = frozenset()
    #: Fields added after outputs existed: hashed only when set to something other than their default (which
    #: is the behaviour before they existed), so those outputs stay current.
    _hashed_when_set: frozenset[str] = frozenset()

    def hash(self) -> str:
        return digest({**self.output_fields(), "_class": type(self).__name__})

    def output_fields(self) -> dict:
        """The fields that change what the stage writes (the hashed ones), as JSON."""
        out = self.model_dump(mode="json", exclude=set(self._runtime_only))
        for name in self._hashed_when_set:
            if getattr(self, name) == type(self).model_fields[name].default:
                out.pop(name)
        return out


class SignalConfig(StageConfig):
    """How attention rows become signals (shared by capture and later stages)."""

    connectivity_threshold: float = Field(0.02, gt=0.0, lt=1.0)
    exclude_first_token: bool = True
    exclude_template_tokens: bool = True


class CaptureConfig(StageConfig):
    """Stage 2: teacher-forced capture of generation-phase attention."""

    _runtime_only = frozenset({"device", "progress", "batch_size"})

    teacher: str = Field("embedded", min_length=1, description="'embedded' or a local HF model path")
    cot: Literal["reference", "generate"] = "reference"
    max_new_tokens: int = Field(512, ge=1, le=32768, description="token budget for generated CoT")
    generate_batch: int = Field(1, ge=1, le=512, description="CoTs generated at once (HF); 1 is exact single greedy")
    max_problem_tokens: int | None = Field(None, ge=1, description="reject longer problems (default: context - budget)")
    n_computing_heads: int = Field(8, ge=0, le=1024)
    calibration_problems: int = Field(4, ge=1, le=1000)
    computing_heads: tuple[tuple[int, int], ...] | None = Field(
        None, description="explicit (layer, head) pairs; skips calibration"
    )
    hidden_layer: int | None = Field(None, description="layer whose hidden states are kept (default: n_layers // 2)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    signals: SignalConfig = SignalConfig()
    signals_version: int = SIGNALS_VERSION
    chunk_format_version: Literal[1, 2] = Field(CHUNK_FORMAT_VERSION, description="the chunk layout written "
                                                "(mycelium.records.chunk); a run keeps the one it was pinned with")
    batch_size: int | None = Field(None, ge=1, le=256, description="problems per teacher-forced pass (padded; every "
                                   "signal equals the one-problem pass's within fp16); default: 8 on a GPU, 1 on a "
                                   "CPU, where a batch was measured slower (benchmarks/capture.py)")
    progress: bool = True

    @field_validator("computing_heads")
    @classmethod
    def _heads_non_negative(cls, v):
        if v is not None and any(l < 0 or h < 0 for l, h in v):
            raise ValueError("computing_heads: layer and head indices must be >= 0")
        return v


class IngestConfig(StageConfig):
    """Stage 1: dataset file -> sharded problems.

    ``limit`` and ``shard_size`` choose which problems a run has and how they are grouped, never what a
    problem's record holds, so they are not in the lineage of the outputs made from the problems (see
    ``mycelium.stages.ingest``): a new limit re-shards the run and keeps every chunk already captured.
    """

    shard_size: int = Field(1000, ge=1)
    dataset_format: Literal["auto", "gsm8k", "math", "plain"] = "auto"
    limit: int | None = Field(None, ge=1)

    #: The fields that decide which problems a run has, not what each problem's record holds.
    selection_fields: ClassVar[tuple[str, ...]] = ("limit", "shard_size")


class AnalyzeConfig(StageConfig):
    """Stage 3: per-chunk analysis. Which layers/heads feed each signal is recorded in the output."""

    # sandbox_timeout_s is hashed: an expression that times out is labelled differently.
    _runtime_only = frozenset({"progress", "workers"})

    jsd_layers: tuple[int, ...] | None = Field(None, description="layers averaged for the JSD trace (overrides the fraction)")
    jsd_layer_fraction: tuple[float, float] = Field(
        (0.0, 0.5), description="else the layers in [a, b) of the depth; default the first half"
    )
    # Sentences: of four measured runs (GSM8K and MATH, reference and generated CoT; benchmarks/signals_report.py)
    # they leave a calculation alone in its step most often in three (1.00, 0.94, 0.68 vs JSD's 0.75, 0.66, 0.65);
    # in MATH reference CoT JSD does better (0.46 vs 0.38). JSD peaks never found calculation starts better than
    # as many random word starts. See README: Measured.
    segmentation: Literal["jsd", "lines", "sentences", "jsd_lines"] = Field(
        "sentences", description="step boundaries: JSD peaks, line or sentence starts, or line starts ranked by JSD")
    iaf_heads: Literal["computing", "all"] = Field("computing", description="heads whose mean IAF gives heartbeats")
    map_heads: Literal["computing", "layer_mean"] = Field("computing", description="attention used to map steps")
    savgol_window: int = Field(5, ge=3)
    savgol_polyorder: int = Field(2, ge=0)
    # Defaults: the best setting on half of 400 GSM8K train problems (embedded teacher, reference CoT),
    # held-out F1 0.41 against 0.20 for as many boundaries at random word starts (benchmarks/boundaries.py).
    peak_prominence: float = Field(3.0, gt=0, description="in units of the smoothed trace's standard deviation")
    peak_distance: int = Field(24, ge=1, description="minimum tokens between boundaries")
    snap_tokens: int = Field(2, ge=0, description="how far a boundary may move to reach a word start")
    heartbeat_signal: Literal["iaf", "iaf_over_chance"] = Field(
        "iaf_over_chance", description="the trace heartbeats are counted on (raw IAF starts at 1 at token 0)")
    heartbeat_min_room: float = Field(
        0.25, ge=0, lt=1, description="share a row could spend off the problem before it counts as evidence")
    heartbeat_threshold: float = Field(0.5, gt=0, lt=1)
    heartbeat_min_run: int = Field(5, ge=1)
    boundary_tolerance: int = Field(2, ge=0, description="tokens, for precision/recall/F1")
    map_top_k: int = Field(3, ge=1, description="most-attended problem tokens per step")
    grounding_threshold: float = Field(
        0.5, gt=0, lt=1, description="IAF above chance at which an ambiguous operand is read from the problem")
    max_expressions: int = Field(64, ge=1)
    sandbox_timeout_s: float = Field(2.0, gt=0)
    workers: int | None = Field(None, ge=1)
    progress: bool = True
    analysis_version: int = ANALYSIS_VERSION

    @field_validator("jsd_layer_fraction")
    @classmethod
    def _fraction_range(cls, v):
        if not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError("jsd_layer_fraction must satisfy 0 <= a < b <= 1")
        return v

    def layers_for(self, n_layers: int) -> list[int]:
        """The layers whose JSD is averaged, for a model of ``n_layers``."""
        if self.jsd_layers is not None:
            return list(self.jsd_layers)
        a, b = self.jsd_layer_fraction
        return list(range(int(a * n_layers), max(int(a * n_layers) + 1, int(round(b * n_layers)))))

    @field_validator("savgol_window")
    @classmethod
    def _odd_window(cls, v):
        if v % 2 == 0:
            raise ValueError("savgol_window must be odd")
        return v

    @field_validator("jsd_layers")
    @classmethod
    def _layers(cls, v):
        if v is not None and (not v or min(v) < 0 or len(set(v)) != len(v)):
            raise ValueError("jsd_layers must be distinct layer indices >= 0, at least one")
        return v

    @model_validator(mode="after")
    def _savgol_order(self):
        # scipy refuses polyorder >= window_length: without this check every chunk would fail at analysis.
        if self.savgol_polyorder >= self.savgol_window:
            raise ValueError(f"savgol_polyorder ({self.savgol_polyorder}) must be less than savgol_window "
                             f"({self.savgol_window})")
        return self


class AggregateConfig(StageConfig):
    """Stage 4: every analysed step of a run -> the IB inputs. Nothing to set yet; its hash names its outputs."""


class DiscoverConfig(StageConfig):
    """Stage 5: IB template discovery by deterministic annealing, and the operating point."""

    _runtime_only = frozenset({"progress", "workers"})
    _hashed_when_set = frozenset({"dtype", "distinct_rows"})

    neighbours: int = Field(10, ge=1, description="k nearest steps in X that smooth p(y|x)")
    smoothing: float = Field(0.5, ge=0, lt=1, description="weight of the neighbours' labels in p(y|x)")
    label_floor: float = Field(1e-3, gt=0, lt=0.1, description="uniform mass mixed into p(y|x) so KL stays finite")
    pca_dims: int = Field(64, ge=2, description="dimensions for the neighbour search")
    beta_growth: float = Field(1.15, gt=1.0, le=3.0)
    beta_start_fraction: float = Field(0.5, gt=0, lt=1, description="start at this fraction of the predicted critical beta")
    beta_max: float = Field(500.0, gt=1)
    # A split's gain is about 1/beta (measured: between 1/beta and 2/beta on GSM8K), so splits worth
    # at least min_gain happen below beta = 2/min_gain; the anneal stops there.
    min_gain: float = Field(0.05, gt=0, lt=1, description="smallest split gain the anneal resolves")
    max_clusters: int = Field(128, ge=2)
    perturbation: float = Field(0.05, gt=0, lt=0.5)
    split_js: float = Field(1e-3, gt=0, description="JS (nats) between copies' q(y|t) above which a split is kept")
    tol: float = Field(1e-5, gt=0)
    max_iter: int = Field(300, ge=10)
    # The defaults are the anneal every run so far made, to the bit. Either option makes an equivalent anneal
    # (the same taxonomy on the runs measured, see templates/equations.py) that is not the same to the bit,
    # so each is hashed when set and its outputs are named apart.
    dtype: Literal["float64", "float32"] = Field("float64", description="precision of the anneal's iterations "
                                                                         "(float32: half the memory traffic)")
    distinct_rows: bool = Field(False, description="iterate over the distinct rows of p(y|x), each with its steps' "
                                                   "summed p(x) (the same equations; fewer rows)")
    gain: float = Field(0.15, gt=0, description="operating point: keep splits whose gain is at least this")
    elbow: bool = Field(False, description="operating point at the elbow of the gain curve instead of `gain`")
    min_size: int = Field(50, ge=1, description="surface tension: smaller templates rejoin their parent")
    examples: int = Field(3, ge=0)
    seed: int = 0
    workers: int | None = Field(None, ge=1, description="threads for the anneal's row blocks and the neighbour "
                                                        "search (default: OMP_NUM_THREADS, else the CPUs)")
    progress: bool = True


class LabelConfig(StageConfig):
    """Stage 6: each analysed problem's program, executed and checked against the dataset answer; examples."""

    _runtime_only = frozenset({"progress"})
    _hashed_when_set = frozenset({"templates_run"})

    # Numbers a program may use without reading them from the problem: units and the usual multipliers,
    # a percent as 0.01 (GSM8K writes 50% as 50*.01), coins (penny, nickel, dime, quarter), weeks in a month.
    constants: tuple[float, ...] = Field((0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 7, 10, 12, 24, 30, 52, 60, 100, 365,
                                          1000, 3600),
                                         description="operands allowed as constants")
    augment: int = Field(0, ge=0, le=100, description="variants with re-sampled numbers per kept program")
    augment_tries: int = Field(4, ge=1, le=20, description="samples tried per variant wanted")
    seed: int = 0
    sandbox_timeout_s: float = Field(5.0, gt=0)
    templates_run: str | None = Field(None, description="label with another run's templates (a mop-up run: its "
                                                          "problems' generated CoT, the training run's taxonomy)")
    progress: bool = True


class StudentLabelConfig(StageConfig):
    """Improvement round k: round k-1's students solve the training problems; a program that executes to the
    dataset's answer is a label (``stages/student.py``). The students' content digest is hashed, not their path;
    the stage checks the directory holds those students."""

    _runtime_only = frozenset({"models", "progress"})

    round: int = Field(ge=1)
    models: str = Field(min_length=1, description="the directory of round k-1's six students")
    models_sha256: str = Field(pattern=r"^[0-9a-f]{12}$", description="their content digest (saved.models_digest)")
    backbone: str = "embedded"
    theta: float = Field(0.9, gt=0, le=1)
    width: int = Field(3, ge=1)
    budget: int = Field(400, ge=1)
    max_programs: int = Field(24, ge=1, description="programs executed per problem at most")
    val_share: float = Field(0.1, gt=0, lt=1, description="merge's: only train-split problems are labelled")
    problems: int | None = Field(None, ge=1, description="the first N train-split problems (by id) only")
    sandbox_timeout_s: float = Field(5.0, gt=0)
    progress: bool = True


class ImproveConfig(StageConfig):
    """The self-improving loop (``stages/improve.py``): its rounds, stop rule, mop-up teacher, and the search and
    training options every round uses (round 0 included, so rounds differ only in their data)."""

    _runtime_only = frozenset({"progress", "device"})
    _hashed_when_set = frozenset({"verifier", "reader", "beam", "verifier_epochs"})

    rounds: int = Field(3, ge=0, le=100, description="improvement rounds at most (0: train and measure round 0)")
    min_gain: float = Field(0.01, ge=0, lt=1, description="stop when val accuracy gains less than this")
    mop_up_teacher: str | None = Field("embedded", description="asked about what nothing solved (generated CoT): "
                                                              "'embedded' or a local HF model dir; None: nobody")
    mop_up_limit: int | None = Field(None, ge=1, description="teacher calls per round at most")
    mop_up_max_new_tokens: int = Field(512, ge=1, le=32768)
    mop_up_batch: int = Field(8, ge=1, le=512)
    problems: int | None = Field(None, ge=1, description="the first N train-split problems (by id) only")
    val_limit: int | None = Field(None, ge=1, description="the first N val-split problems (by id) only")
    part_size: int = Field(25, ge=1, le=10000, description="problems per solver invocation (a map item on AWS)")
    backbone: str = "embedded"
    theta: float = Field(0.9, gt=0, le=1)
    width: int = Field(3, ge=1)
    budget: int = Field(400, ge=1)
    max_programs: int = Field(24, ge=1)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    hidden: int = Field(256, ge=1)
    adapter_layers: int = Field(2, ge=0)
    device: str = "auto"
    progress: bool = True
    verifier: bool = Field(False, description="each round, the reader's beams (the solve map) teach a verifier (the "
                                              "train job): stages/verifier_round.py")
    reader: str | None = Field(None, description="the reader whose beams teach it: a saved reader's directory "
                                                 "(default: the shipped one)")
    beam: int = Field(10, ge=1, description="the reader's beam width")
    verifier_epochs: int = Field(6, ge=1)


class MergeConfig(StageConfig):
    """Stage 7: every kept program's examples -> training/<component>/{train,val}.jsonl, split by problem."""

    _hashed_when_set = frozenset({"round"})

    val_share: float = Field(0.1, gt=0, lt=1, description="share of problems (by id hash) in the val split")
    round: int = Field(0, ge=0, description="0: the teacher's labels; k: also the improvement rounds 1..k "
                                            "(stages/improve.py)")
