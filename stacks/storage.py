"""Storage: the one bucket that holds every run (problems, chunks, signals, steps, ib, models).

Encrypted, public access blocked, TLS only, versioned, access-logged, raw chunks
moved to infrequent access and expired by lifecycle, EventBridge notifications on
(an uploaded ``runs/<run>/manifest.json`` starts a run).
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_s3 as s3
from constructs import Construct

#: Every run lives under this prefix of the bucket (the store URL is s3://<bucket>/runs).
RUNS_PREFIX = "runs"


class StorageStack(Stack):
    """``bucket_name`` is a plain, globally unique name (context ``mycelium:bucket``): other stacks
    then scope their IAM policies to literal ARNs instead of cross-stack export tokens."""

    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str, chunk_ia_days: int = 30,
                 chunk_expire_days: int = 365, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self, "Runs", bucket_name=bucket_name, encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, versioned=True, event_bridge_enabled=True,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix="runs-bucket/",
            lifecycle_rules=[
                # Raw chunks are read by analyze once; keep them cheap, then let them go.
                s3.LifecycleRule(
                    id="raw-chunks", prefix=f"{RUNS_PREFIX}/",
                    tag_filters={"mycelium:kind": "chunk"},
                    transitions=[s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                                               transition_after=Duration.days(chunk_ia_days))],
                    expiration=Duration.days(chunk_expire_days),
                ),
                s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=Duration.days(30)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket_name = bucket_name
        # event_bridge_enabled is implemented by CDK's bucket-notifications custom resource (a Lambda).
        Validations.of(self).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                   "AWSLambdaBasicExecutionRole]",
                reason="CDK's own bucket-notifications handler (enables EventBridge on the bucket) logs with the "
                       "AWS managed basic execution policy; it holds no data permissions.",
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="CDK's bucket-notifications handler calls s3:PutBucketNotification, which it scopes to '*'.",
            ),
        )
