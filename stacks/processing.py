"""Processing: one Lambda function per ``lambdas/<stage>/``, from one container image of the core.

The core (numpy, scipy, sympy, pydantic, matplotlib) is over a layer's 250 MB, so
the functions share a container image built from ``lambdas/Dockerfile``. Each
function may read only the prefixes it reads and write only what it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .storage import RUNS_PREFIX

ROOT = Path(__file__).resolve().parents[1]
#: Never copied into the image build context.
EXCLUDE = [".venv", ".git", "runs", "cdk.out", "tests", "benchmarks", "**/__pycache__", ".pytest_cache", "*.egg-info"]


@dataclass(frozen=True)
class StageSpec:
    """What one stage's function may touch: key patterns under runs/<run>/."""

    memory_mb: int
    timeout_min: int
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    #: Deletes: the stage's own ledger entries when an item succeeds, and what a stage replaces.
    deletes: tuple[str, ...] = ()
    #: The image carries torch (CPU) and the embedded teacher: the solver's function only.
    torch: bool = False


#: Every stage reads the stage records (config + lineage) and the ingest commit (the run's problems).
_RUN = ("stages/*", "commits/ingest/*", "problems/*")

STAGES: dict[str, StageSpec] = {
    # Starts a cloud run: every stage's record from the manifest, then ingest (a re-shard deletes leftover shards).
    "ingest": StageSpec(3008, 15, reads=("manifest.json", "input/*", "summary.json", "stages/*", "commits/ingest/*"),
                        writes=("problems/*", "stages/*", "commits/ingest/*", "failures/ingest/*", "summary.json"),
                        deletes=("problems/*", "failures/ingest/*")),
    "analyze": StageSpec(2048, 5, reads=(*_RUN, "commits/capture/*", "commits/analyze/*", "chunks/*", "traces/*"),
                         writes=("signals/*", "steps/*", "commits/analyze/*", "failures/analyze/*"),
                         deletes=("failures/analyze/*",)),
    "aggregate": StageSpec(4096, 15, reads=(*_RUN, "commits/analyze/*", "steps/*", "summary.json"),
                           writes=("ib/*", "stages/aggregate.json", "commits/aggregate/*", "failures/aggregate/*",
                                   "summary.json"),
                           deletes=("failures/aggregate/*",)),
    "discover": StageSpec(10240, 15, reads=(*_RUN, "commits/aggregate/*", "ib/*", "summary.json"),
                          writes=("ib/*", "stages/discover.json", "commits/discover/*", "failures/discover/*",
                                  "summary.json"),
                          deletes=("failures/discover/*",)),
    "label": StageSpec(2048, 5, reads=(*_RUN, "commits/analyze/*", "commits/capture/*", "commits/discover/*",
                                       "commits/label/*", "signals/*", "steps/*", "ib/templates.npz"),
                       writes=("labels/*", "examples/*", "commits/label/*", "failures/label/*"),
                       deletes=("failures/label/*",)),
    # Round k also reads the mop-up runs' labels (runs/<run>.mopup-r<k>/) and the students' (rounds/r<k>/examples/).
    "merge": StageSpec(4096, 15, reads=(*_RUN, "commits/label/*", "commits/student-r*", "examples/*",
                                        "rounds/*/examples/*", "summary.json"),
                       writes=("training/*", "rounds/*/training/*", "stages/merge*", "commits/merge*",
                               "failures/merge*", "summary.json"),
                       deletes=("failures/merge*",)),
    # The improvement loop's solver on Lambda (CPU): round k-1's students label a part of the training problems,
    # or round k's answer a part of the val problems. Reads the students and the run's problems and records.
    "solve": StageSpec(4096, 15, reads=(*_RUN, "models/*", "rounds/*/models/*", "commits/student-r*",
                                        "rounds/*/val/*", "rounds/*/beams/*"),
                       writes=("stages/student-r*", "rounds/*/labels/*", "rounds/*/examples/*",
                               "commits/student-r*", "failures/student-r*", "rounds/*/val/*", "rounds/*/beams/*"),
                       # the runner restores the round's record when a fatal error stops it before any problem
                       deletes=("failures/student-r*", "stages/student-r*"), torch=True),
    # The loop's plan, mop-up start (the mop-up run's input, records and ingest) and per-round report.
    "improve": StageSpec(4096, 15, reads=(*_RUN, "commits/label/*", "commits/student-r*", "commits/merge*",
                                          "rounds/*", "training/*", "capture/calibration.json", "input/*",
                                          "summary.json", "models/verifier/metrics.json"),
                         writes=("rounds/*", "input/*", "problems/*", "stages/*", "commits/ingest/*",
                                 "failures/ingest/*", "failures/student-r*", "summary.json"),
                         deletes=("problems/*", "failures/ingest/*")),
    # Records how the run ended, the map stages' lines of the summary tallied from commits and ledger, and the
    # analyze report (it reads every current signals record, as aggregate reads every steps file).
    "finish": StageSpec(2048, 15, reads=(*_RUN, "commits/capture/*", "commits/analyze/*", "commits/label/*",
                                         "signals/*", "summary.json"),
                        writes=("status/run.json", "summary.json", "analyze/*")),
}


def grant_run_prefixes(role: iam.IRole, bucket: s3.IBucket, reads: tuple[str, ...], writes: tuple[str, ...],
                       lists: bool = True, deletes: tuple[str, ...] = ()) -> None:
    """GetObject on ``runs/*/<read>``, PutObject on ``runs/*/<write>``, DeleteObject on ``runs/*/<delete>``,
    ListBucket under ``runs/`` only."""
    objects = lambda pats: [bucket.arn_for_objects(f"{RUNS_PREFIX}/*/{p}") for p in pats]  # noqa: E731
    if reads:
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=objects(reads)))
    if writes:
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=objects(writes)))
    if deletes:
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:DeleteObject"], resources=objects(deletes)))
    if lists:
        # HEAD of a missing key answers 403 without ListBucket; list only under the runs prefix.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{RUNS_PREFIX}/*"]}}))


def acknowledge_run_scoped(scope: Construct, bucket: s3.IBucket, patterns: tuple[str, ...]) -> None:
    """cdk-nag IAM5 flags the ``runs/*/<prefix>`` wildcards; each is acknowledged with why."""
    reason = ("Run names are chosen at submit time: each object ARN is scoped to runs/*/<prefix> of one "
              "bucket, and to the prefixes this role reads or writes.")
    Validations.of(scope).acknowledge(*[
        Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
                          f"{bucket.bucket_name}/{RUNS_PREFIX}/*/{p}]", reason=reason)
        for p in sorted(set(patterns))
    ])


class ProcessingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str, name_prefix: str = "mycelium",
                 **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        #: stage -> function name ("mycelium-analyze"); the orchestration stack invokes them by name.
        self.function_names = {stage: f"{name_prefix}-{stage}" for stage in STAGES}
        bucket = s3.Bucket.from_bucket_name(self, "Runs", bucket_name)
        self.functions: dict[str, lambda_.Function] = {}
        for stage, spec in STAGES.items():
            self.functions[stage] = self._function(stage, spec, bucket)

    def _function(self, stage: str, spec: StageSpec, bucket: s3.IBucket) -> lambda_.Function:
        dlq = sqs.Queue(self, f"{stage.title()}Dlq", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                        retention_period=Duration.days(14))
        log_group = logs.LogGroup(self, f"{stage.title()}Logs", retention=logs.RetentionDays.ONE_MONTH)
        role = iam.Role(self, f"{stage.title()}Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        description=f"mycelium {stage}: reads {', '.join(spec.reads)}; writes {', '.join(spec.writes)}")
        fn = lambda_.DockerImageFunction(
            self, f"{stage.title()}Function",
            code=lambda_.DockerImageCode.from_image_asset(
                str(ROOT), file="lambdas/Dockerfile", cmd=[f"lambdas.{stage}.handler.handler"], exclude=EXCLUDE,
                build_args={"WITH_TORCH": "1"} if spec.torch else None),
            memory_size=spec.memory_mb, timeout=Duration.minutes(spec.timeout_min), role=role,
            dead_letter_queue=dlq, log_group=log_group, logging_format=lambda_.LoggingFormat.JSON,
            environment={"MYCELIUM_STORE": f"s3://{bucket.bucket_name}/{RUNS_PREFIX}"},
            description=f"mycelium {stage} stage", function_name=self.function_names[stage],
        )
        log_group.grant_write(role)
        grant_run_prefixes(role, bucket, spec.reads, spec.writes, lists=bool(spec.reads), deletes=spec.deletes)
        acknowledge_run_scoped(role, bucket, spec.reads + spec.writes + spec.deletes)
        return fn
