"""GPU workers: AWS Batch on EC2 g5 running the capture container (one A10G per job) and the training
container (one g5.12xlarge or g5.48xlarge per job: 4 or 8 A10Gs, DDP over NCCL).

One job definition serves both capture jobs of a run: ``--prepare`` (pin the
config, calibrate the computing heads) and the array job, one element per
problems shard (the element reads ``AWS_BATCH_JOB_ARRAY_INDEX``). The image is
built from ``gpu_workers/Dockerfile`` (``WORKER=capture``) as an ECR asset; build it with
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

#: Training: one multi-GPU instance per job (DDP over NCCL across its A10Gs): g5.12xlarge has 4, g5.48xlarge 8.
TRAIN_INSTANCE_TYPES = {4: "g5.12xlarge", 8: "g5.48xlarge"}
#: What a training worker reads (the merged examples, checked against merge's commit and lineage; an improvement
#: round's, and the run's problems for the loop's split; the round's beams for its verifier) and writes (round k's
#: students and verifier under rounds/r<k>/models/).
TRAIN_READS = ("stages/*", "commits/merge*", "training/*", "rounds/*/training/*", "commits/ingest/*", "problems/*",
               "rounds/*/beams/*")
TRAIN_WRITES = ("models/*", "rounds/*/models/*", "status/train/*")


class GpuWorkersStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str, max_vcpus: int = 64,
                 spot: bool = False, vllm_version: str = "", train_gpus: int = 8, **kwargs) -> None:
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
        self.compute = self._g5("G5", INSTANCE_TYPES, max_vcpus, spot)
        self.queue = batch.JobQueue(self, "CaptureQueue", priority=1)
        self.queue.add_compute_environment(self.compute, 1)

        self.job_role = iam.Role(self, "CaptureJobRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                 description="mycelium capture worker: reads problems and the run config, "
                                             "writes chunks, traces, failures and status")
        grant_run_prefixes(self.job_role, bucket, CAPTURE_READS, CAPTURE_WRITES, deletes=CAPTURE_DELETES)
        acknowledge_run_scoped(self.job_role, bucket, CAPTURE_READS + CAPTURE_WRITES + CAPTURE_DELETES)
        log_group = logs.LogGroup(self, "CaptureLogs", retention=logs.RetentionDays.ONE_MONTH)
        image = ecs.ContainerImage.from_asset(
            str(ROOT), file="gpu_workers/Dockerfile", exclude=EXCLUDE,
            build_args={"WORKER": "capture", **({"VLLM_VERSION": vllm_version} if vllm_version else {})})
        self.job_definition = self._job("Capture", image, self.job_role, log_group, bucket_name, gpu=1, cpu=4,
                                        memory=Size.gibibytes(15), retries=3)
        self._training(bucket, bucket_name, train_gpus, spot)
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

    def _training(self, bucket: s3.IBucket, bucket_name: str, train_gpus: int, spot: bool) -> None:
        """The training queue: one g5 instance with ``train_gpus`` A10Gs per job, scaled from zero."""
        if train_gpus not in TRAIN_INSTANCE_TYPES:
            raise ValueError(f"train_gpus must be one of {sorted(TRAIN_INSTANCE_TYPES)}, not {train_gpus}")
        instance = TRAIN_INSTANCE_TYPES[train_gpus]
        vcpus = {4: 48, 8: 192}[train_gpus]
        self.train_compute = self._g5("G5Train", (instance,), vcpus, spot)
        self.train_queue = batch.JobQueue(self, "TrainQueue", priority=1)
        self.train_queue.add_compute_environment(self.train_compute, 1)
        self.train_role = iam.Role(self, "TrainJobRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                   description="mycelium training worker: reads the merged examples, writes the "
                                               "trained specialists and its status")
        grant_run_prefixes(self.train_role, bucket, TRAIN_READS, TRAIN_WRITES)
        acknowledge_run_scoped(self.train_role, bucket, TRAIN_READS + TRAIN_WRITES)
        log_group = logs.LogGroup(self, "TrainLogs", retention=logs.RetentionDays.ONE_MONTH)
        image = ecs.ContainerImage.from_asset(str(ROOT), file="gpu_workers/Dockerfile", exclude=EXCLUDE,
                                              build_args={"WORKER": "train"})
        # NCCL passes tensors between the GPUs' processes through /dev/shm: Docker's 64 MB is too little.
        self.train_job_definition = self._job(
            "Train", image, self.train_role, log_group, bucket_name, gpu=train_gpus, cpu=vcpus - 4,
            memory=Size.gibibytes({4: 180, 8: 720}[train_gpus]), retries=2,
            linux=batch.LinuxParameters(self, "TrainLinux", shared_memory_size=Size.gibibytes(64)))

    def _job(self, name: str, image, role: iam.IRole, log_group, bucket_name: str, *, gpu: int, cpu: int, memory: Size,
             retries: int, linux=None) -> batch.EcsJobDefinition:
        """A worker's job definition: its image's entry point on ``--store s3://<bucket>/runs --run Ref::run``
        (Batch substitutes Ref::run from SubmitJob's Parameters); a reclaimed Spot instance or a host failure
        retries the job, a bug does not."""
        return batch.EcsJobDefinition(
            self, f"{name}Job",
            container=batch.EcsEc2ContainerDefinition(
                self, f"{name}Container", image=image, gpu=gpu, cpu=cpu, memory=memory, linux_parameters=linux,
                command=["--store", f"s3://{bucket_name}/{RUNS_PREFIX}", "--run", "Ref::run"],
                environment={"MYCELIUM_CACHE_DIR": "/tmp/mycelium-cache", "PYTHONUNBUFFERED": "1"},
                job_role=role, logging=ecs.LogDriver.aws_logs(stream_prefix=name.lower(), log_group=log_group),
            ),
            parameters={"run": "unset"},
            timeout=Duration.hours(12),
            retry_strategies=[batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                              batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom(on_reason="Host EC2*")),
                              batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_exit_code="*"))],
            retry_attempts=retries,
        )

    def _g5(self, construct_id: str, instance_types: tuple[str, ...], max_vcpus: int, spot: bool):
        """A managed Batch compute environment of g5 instances with the ECS GPU AMI, in the private subnets,
        scaling from zero."""
        return batch.ManagedEc2EcsComputeEnvironment(
            self, construct_id, vpc=self.vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            instance_types=[ec2.InstanceType(t) for t in instance_types], use_optimal_instance_classes=False,
            images=[batch.EcsMachineImage(image_type=batch.EcsMachineImageType.ECS_AL2_NVIDIA)],
            minv_cpus=0, maxv_cpus=max_vcpus, spot=spot,
            allocation_strategy=(batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED if spot
                                 else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE),
        )
