"""GPU workers: AWS Batch on EC2 g5 (one NVIDIA A10G per g5.xlarge) running the capture container.

One job definition serves both capture jobs of a run: ``--prepare`` (pin the
config, calibrate the computing heads) and the array job, one element per
problems shard (the element reads ``AWS_BATCH_JOB_ARRAY_INDEX``). The image is
built from ``gpu_workers/capture/Dockerfile`` as an ECR asset; build it with
``--context mycelium:vllm=<version>`` to generate chains of thought with vLLM.

Instances run in private subnets; S3 traffic (the chunks) goes through a gateway
endpoint, not the NAT, and the compute environment scales to zero between runs.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Size, Stack, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .processing import EXCLUDE, ROOT, acknowledge_run_scoped, grant_run_prefixes
from .storage import RUNS_PREFIX

#: g5 sizes the compute environment may launch; capture needs one GPU, so the smallest wins first.
INSTANCE_TYPES = ("g5.xlarge", "g5.2xlarge", "g5.4xlarge")

#: What a capture worker reads and writes under runs/<run>/.
CAPTURE_READS = ("stages/*", "commits/ingest/*", "problems/*", "capture/*", "commits/capture/*")
CAPTURE_WRITES = ("stages/capture.json", "capture/*", "chunks/*", "traces/*", "commits/capture/*",
                  "failures/capture/*", "status/capture/*")
#: A problem that succeeds on retry removes its earlier ledger entry, and nothing else.
CAPTURE_DELETES = ("failures/capture/*",)


class GpuWorkersStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str, max_vcpus: int = 64,
                 spot: bool = False, vllm_version: str = "", **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        bucket = s3.Bucket.from_bucket_name(self, "Runs", bucket_name)
        flow_logs = logs.LogGroup(self, "VpcFlowLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="workers", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={"all": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        self.compute = batch.ManagedEc2EcsComputeEnvironment(
            self, "G5", vpc=self.vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            instance_types=[ec2.InstanceType(t) for t in INSTANCE_TYPES], use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2_NVIDIA)],
            minv_cpus=0, maxv_cpus=max_vcpus, spot=spot,
            allocation_strategy=(batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED if spot
                                 else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE),
        )
        self.queue = batch.JobQueue(self, "CaptureQueue", priority=1)
        self.queue.add_compute_environment(self.compute, 1)

        self.job_role = iam.Role(self, "CaptureJobRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                 description="mycelium capture worker: reads problems and the run config, "
                                             "writes chunks, traces, failures and status")
        grant_run_prefixes(self.job_role, bucket, CAPTURE_READS, CAPTURE_WRITES, deletes=CAPTURE_DELETES)
        acknowledge_run_scoped(self.job_role, bucket, CAPTURE_READS + CAPTURE_WRITES + CAPTURE_DELETES)
        log_group = logs.LogGroup(self, "CaptureLogs", retention=logs.RetentionDays.ONE_MONTH)
        image = ecs.ContainerImage.from_asset(
            str(ROOT), file="gpu_workers/capture/Dockerfile", exclude=EXCLUDE,
            build_args={"VLLM_VERSION": vllm_version} if vllm_version else None)
        self.job_definition = batch.EcsJobDefinition(
            self, "CaptureJob",
            container=batch.EcsEc2ContainerDefinition(
                self, "CaptureContainer", image=image, gpu=1, cpu=4, memory=Size.gibibytes(15),
                # Batch substitutes Ref::run from SubmitJob's Parameters.
                command=["--store", f"s3://{bucket_name}/{RUNS_PREFIX}", "--run", "Ref::run"],
                environment={"MYCELIUM_CACHE_DIR": "/tmp/mycelium-cache", "PYTHONUNBUFFERED": "1"},
                job_role=self.job_role, logging=ecs.LogDriver.aws_logs(stream_prefix="capture", log_group=log_group),
            ),
            parameters={"run": "unset"},
            timeout=Duration.hours(12),
            # A reclaimed Spot instance or a host failure retries the element; a bug does not.
            retry_strategies=[batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                              batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom(on_reason="Host EC2*")),
                              batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_exit_code="*"))],
            retry_attempts=3,
        )
        Validations.of(self).acknowledge(
            Acknowledgment(id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                              "service-role/AmazonEC2ContainerServiceforEC2Role]",
                           reason="The Batch instance role needs the ECS agent's AWS managed policy to register "
                                  "the g5 hosts with the cluster; it holds no data permissions."),
            Acknowledgment(id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                           reason="ecr:GetAuthorizationToken (pulling the worker image) has no resource-level "
                                  "permissions; the image pull itself is scoped to the CDK assets repository."),
            Acknowledgment(id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                              "service-role/AWSBatchServiceRole]",
                           reason="AWS Batch's own service role, as Batch documents it."),
        )
