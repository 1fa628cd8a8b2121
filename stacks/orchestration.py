"""Orchestration: one Standard state machine per deployment, one execution per submitted run.

    ParseRun -> Ingest (Lambda) -> Prepare (Batch .sync: pin config, calibrate)
      -> Capture (Batch .sync array job, one element per shard; a plain job for one shard)
      -> Analyze (Distributed Map over runs/<run>/commits/capture/: one item per committed chunk, S3
                  ListObjectsV2 item reader, max concurrency, tolerated failure %, results to runs/_map-results/)
      -> Aggregate (Lambda) -> Discover (Lambda)
      -> Label (Distributed Map over runs/<run>/commits/analyze/, the label Lambda) -> round 0:
      -> Merge (Lambda) -> Train (Batch .sync: the multi-GPU job definition, torchrun over the instance's GPUs)
      -> Plan (Lambda) -> Verifier? (the run's option: BeamsTrain, BeamsVal (Distributed Maps of the solver
         Lambda: the reader's beams) -> TrainVerifier (Batch .sync, MYCELIUM_TRAIN=verifier))
      -> Evaluate (Distributed Map of the solver Lambda over the val problems' parts)
      -> Report (Lambda: grades the parts, the per-round table, the decision)
      -> Improve? (Choice on the decision) -- yes: NextRound -> SolveTrain (Distributed Map of the solver Lambda:
         round k-1's students label the training problems) -> MopUp (Lambda: the still-failing problems become
         run <run>.mopup-r<k>) -> [its Prepare -> Capture -> Analyze map -> Label map] -> Merge (round k) -> Train
         -> Plan -> Evaluate -> Report -> Improve? ...; no: Finish (Lambda: status/run.json) -> Succeed

Every task catches ``States.ALL`` into the failure path, which records the error and
cause in ``status/run.json`` and fails the execution with them. Lambda throttling
and transient service errors retry with exponential backoff and full jitter.

An EventBridge rule starts an execution when ``runs/<run>/manifest.json`` is created.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Stack, Token, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .storage import RUNS_PREFIX

#: Lambda errors worth retrying: throttling and the service's own transient failures.
TRANSIENT = ["Lambda.TooManyRequestsException", "Lambda.ServiceException", "Lambda.AWSLambdaException",
             "Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException"]


#: Where the Distributed Map writes its results, one folder per map run. A run name starts with a letter or
#: digit, so this never meets a run; each run's map-run ARN and results key are in its status/run.json.
MAP_RESULTS_PREFIX = f"{RUNS_PREFIX}/_map-results"


class ScopedResultWriter(sfn.ResultWriterV2):
    """The Distributed Map's results go under ``runs/_map-results/``; CDK's own grant would be ``bucket/*``."""

    def __init__(self, bucket: s3.IBucket):
        # A static prefix: Step Functions allows a path here, but moto's engine evaluates it against the
        # map's results instead of its input, and the tests run the deployed definition.
        super().__init__(bucket=bucket, prefix=MAP_RESULTS_PREFIX)
        self._objects = bucket.arn_for_objects(f"{MAP_RESULTS_PREFIX}/*")

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [iam.PolicyStatement(actions=["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                                             "s3:AbortMultipartUpload"], resources=[self._objects])]


#: A map stage's items are its upstream stage's commit markers: only committed outputs are ever items.
COMMITTED_CHUNKS = "commits/capture/"


class CommittedItemsReader(sfn.S3ObjectsItemReader):
    """Lists ``runs/<run>/commits/<stage>/`` (one object per committed item: capture's chunks, analyze's problems);
    ListBucket under that prefix only. ``run``: the JSONPath of the run (a mop-up run's is ``$.mopup.run``)."""

    def __init__(self, bucket: s3.IBucket, of: str = "capture", run: str = "$.run"):
        self._prefix = f"commits/{of}/"
        super().__init__(bucket=bucket, prefix=sfn.JsonPath.format(f"{RUNS_PREFIX}/{{}}/{self._prefix}",
                                                                     sfn.JsonPath.string_at(run)))
        self._bucket_arn = bucket.bucket_arn

    def provide_policy_statements(self) -> list[iam.PolicyStatement]:
        return [iam.PolicyStatement(actions=["s3:ListBucket"], resources=[self._bucket_arn],
                                    conditions={"StringLike": {"s3:prefix": [f"{RUNS_PREFIX}/*/{self._prefix}*"]}})]


def manifest_pattern(bucket_name: str) -> events.EventPattern:
    return events.EventPattern(
        source=["aws.s3"], detail_type=["Object Created"],
        detail={"bucket": {"name": [bucket_name]},
                "object": {"key": [{"wildcard": f"{RUNS_PREFIX}/*/manifest.json"}]}},
    )


class OrchestrationStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, bucket_name: str,
                 function_names: dict[str, str], job_queue: batch.IJobQueue,
                 job_definition: batch.IJobDefinition, train_queue: batch.IJobQueue,
                 train_job_definition: batch.IJobDefinition, name_prefix: str = "mycelium", **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.train_queue, self.train_job_definition = train_queue, train_job_definition
        self.bucket = s3.Bucket.from_bucket_name(self, "Runs", bucket_name)
        # By name (the processing stack names its functions): ARNs and grants stay literal and reviewable.
        self.function_names = dict(function_names)
        self.functions = {stage: lambda_.Function.from_function_name(self, f"{stage.title()}Fn", name)
                          for stage, name in function_names.items()}
        self.job_queue, self.job_definition = job_queue, job_definition

        failed = self._invoke("RecordFailure", "finish", {
            "run.$": "$.run", "state": "failed", "error.$": "$.error"}, result_path="$.finish")
        # The original error name is in status/run.json and in the history; a constant name here keeps the
        # execution's own error one string to alarm on.
        failed.next(sfn.Fail(self, "RunFailed", error="MyceliumRunFailed", cause_path="$.error.Cause"))

        def guarded(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
            return task.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        parse = sfn.Pass(self, "ParseRun", parameters={
            "manifest_key.$": "$.detail.object.key",
            "run.$": "States.ArrayGetItem(States.StringSplit($.detail.object.key, '/'), 1)",
        })
        ingest = guarded(self._invoke("Ingest", "ingest", {"manifest_key.$": "$.manifest_key"},
                                      result_path="$.ingest"))
        prepare = guarded(self._capture_job("Prepare", mode="prepare"))
        capture_one = guarded(self._capture_job("CaptureShard"))
        capture_array = guarded(self._capture_job("CaptureShards", array_size=sfn.JsonPath.number_at("$.ingest.shards")))
        analyze = guarded(self._analyze_map())
        aggregate = guarded(self._invoke("Aggregate", "aggregate", {"run.$": "$.run"}, result_path="$.aggregate"))
        discover = guarded(self._invoke("Discover", "discover", {"run.$": "$.run"}, result_path="$.discover"))
        finish = guarded(self._invoke("Finish", "finish", {
            "run.$": "$.run", "state": "succeeded",
            "outputs": {"ingest.$": "$.ingest", "aggregate.$": "$.aggregate", "discover.$": "$.discover",
                        "analyze.$": "$.analyze", "improve.$": "$.report"},
        }, result_path="$.finish"))

        shards = sfn.Choice(self, "HowManyShards?")
        shards.when(sfn.Condition.number_greater_than("$.ingest.shards", 1), capture_array)
        shards.otherwise(capture_one)
        capture_one.next(analyze)
        capture_array.next(analyze)
        label = guarded(self._committed_map("Label", "label", of="analyze", result_path="$.label"))
        analyze.next(aggregate).next(discover).next(label)
        label.next(self._second_half(guarded, finish))
        finish.next(sfn.Succeed(self, "RunSucceeded"))
        definition = parse.next(ingest).next(prepare).next(shards)

        log_group = logs.LogGroup(self, "StateMachineLogs", retention=logs.RetentionDays.ONE_MONTH)
        self.state_machine = sfn.StateMachine(
            self, "Pipeline", definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_name=f"{name_prefix}-pipeline",  # `mycelium status` finds it by this name
            state_machine_type=sfn.StateMachineType.STANDARD, timeout=Duration.hours(48), tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            comment="mycelium: one execution per submitted run (runs/<run>/manifest.json)",
        )
        self._trigger(bucket_name)
        self._acknowledge()

    def _second_half(self, guarded, finish: sfn.IChainable) -> sfn.IChainable:
        """Round 0 (merge, train, evaluate, report), then the improvement rounds while the report says so."""
        start = sfn.Pass(self, "StartLoop", result=sfn.Result.from_number(0), result_path="$.round")
        merge = guarded(self._invoke("Merge", "merge", {"run.$": "$.run", "round.$": "$.round"}, result_path="$.merge"))
        train = guarded(self._train_job())
        plan = guarded(self._invoke("Plan", "improve", {"run.$": "$.run", "round.$": "$.round", "action": "plan"},
                                    result_path="$.plan"))
        evaluate = guarded(self._solve_map("Evaluate", "val", "$.plan.val_parts"))
        report = guarded(self._invoke("Report", "improve", {"run.$": "$.run", "round.$": "$.round",
                                                            "action": "report"}, result_path="$.report"))
        next_round = sfn.Pass(self, "NextRound", input_path="$.report.next_round", result_path="$.round")
        solve_train = guarded(self._solve_map("SolveTrain", "train", "$.plan.train_parts"))
        mop_up = guarded(self._invoke("MopUp", "improve", {"run.$": "$.run", "round.$": "$.round",
                                                           "action": "mop-up"}, result_path="$.mopup"))
        stop = guarded(self._invoke("ReportNothingNew", "improve", {
            "run.$": "$.run", "round.$": "$.round", "action": "report", "nothing_new": True}, result_path="$.report"))
        # The mop-up run: the teacher's generated CoT on the failures, captured, analysed and labelled as a run is.
        prepare = guarded(self._capture_job("PrepareMopUp", mode="prepare", run="$.mopup.run"))
        capture_one = guarded(self._capture_job("CaptureMopUpShard", run="$.mopup.run"))
        capture_array = guarded(self._capture_job("CaptureMopUpShards", run="$.mopup.run",
                                                  array_size=sfn.JsonPath.number_at("$.mopup.shards")))
        analyze = guarded(self._committed_map("AnalyzeMopUp", "analyze", of="capture", run="$.mopup.run",
                                              result_path="$.mopup_analyze"))
        label = guarded(self._committed_map("LabelMopUp", "label", of="analyze", run="$.mopup.run",
                                            result_path="$.mopup_label"))
        shards = sfn.Choice(self, "MopUpShards?")
        shards.when(sfn.Condition.number_greater_than("$.mopup.shards", 1), capture_array)
        shards.otherwise(capture_one)
        capture_one.next(analyze)
        capture_array.next(analyze)
        analyze.next(label).next(merge)
        prepare.next(shards)
        new = sfn.Choice(self, "AnythingNew?")
        new.when(sfn.Condition.boolean_equals("$.mopup.new", False), stop)
        new.when(sfn.Condition.number_greater_than("$.mopup.asked", 0), prepare)
        new.otherwise(merge)
        stop.next(finish)
        improve = sfn.Choice(self, "Improve?")
        improve.when(sfn.Condition.boolean_equals("$.report.continue", True),
                     next_round.next(solve_train).next(mop_up).next(new))
        improve.otherwise(finish)
        # The round's verifier (the run's improve option): the reader's beams of the train and val parts (the
        # solver Lambda's maps), then the training job trains it on them, before val is solved.
        beams_train = guarded(self._solve_map("BeamsTrain", "beams-train", "$.plan.train_parts"))
        beams_val = guarded(self._solve_map("BeamsVal", "beams-val", "$.plan.val_parts"))
        train_verifier = guarded(self._train_job("TrainVerifier", what="verifier"))
        verify = sfn.Choice(self, "Verifier?")
        verify.when(sfn.Condition.boolean_equals("$.plan.verifier", True),
                    beams_train.next(beams_val).next(train_verifier).next(evaluate))
        verify.otherwise(evaluate)
        merge.next(train).next(plan).next(verify)
        evaluate.next(report).next(improve)
        return start.next(merge)

    def _train_job(self, name: str = "Train", what: str | None = None) -> tasks.BatchSubmitJob:
        """The round's students on one multi-GPU instance (``gpu_workers/train``: torchrun over its GPUs); with
        ``what`` "verifier", the round's verifier from its beams."""
        env = {"MYCELIUM_ROUND": sfn.JsonPath.format("{}", sfn.JsonPath.string_at("$.round"))}
        if what:
            env["MYCELIUM_TRAIN"] = what
        return tasks.BatchSubmitJob(
            self, name, job_name=f"mycelium-{name.lower()}", job_queue_arn=self.train_queue.job_queue_arn,
            job_definition_arn=self.train_job_definition.job_definition_arn,
            payload=sfn.TaskInput.from_object({"run.$": "$.run"}),
            container_overrides=tasks.BatchContainerOverrides(environment=env),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            result_selector={"job_id.$": "$.JobId", "status.$": "$.Status"},
            result_path="$.train" if what is None else f"$.train_{what}",
        )

    def _solve_map(self, name: str, split: str, parts: str) -> sfn.DistributedMap:
        """The solver Lambda over the parts of the val problems (``val``) or the training problems (``train``)."""
        item = sfn.DistributedMap(
            self, name, items_path=parts,
            item_selector={"run.$": "$.run", "round.$": "$.round", "split": split, "part.$": "$$.Map.Item.Value"},
            max_concurrency_path="$.ingest.map.max_concurrency",
            tolerated_failure_percentage_path="$.ingest.map.tolerated_failure_percentage",
            map_execution_type=sfn.StateMachineType.STANDARD, result_path=sfn.JsonPath.DISCARD,
        )
        item.item_processor(self._invoke(f"{name}Part", "solve", {
            "run.$": "$.run", "round.$": "$.round", "split.$": "$.split", "part.$": "$.part"}, result_path="$.solved"))
        return item

    def _invoke(self, name: str, stage: str, payload: dict, result_path: str) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            self, name, lambda_function=self.functions[stage], payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True, retry_on_service_exceptions=False, result_path=result_path,
        )
        task.add_retry(errors=TRANSIENT, interval=Duration.seconds(2), max_attempts=6, backoff_rate=2.0,
                       max_delay=Duration.seconds(60), jitter_strategy=sfn.JitterType.FULL)
        return task

    def _capture_job(self, name: str, mode: str = "shard", array_size=None, run: str = "$.run") -> tasks.BatchSubmitJob:
        return tasks.BatchSubmitJob(
            self, name, job_name=f"mycelium-capture-{mode}",
            job_queue_arn=self.job_queue.job_queue_arn, job_definition_arn=self.job_definition.job_definition_arn,
            payload=sfn.TaskInput.from_object({"run.$": run}),  # Batch Parameters: Ref::run in the command
            container_overrides=tasks.BatchContainerOverrides(environment={"MYCELIUM_CAPTURE_MODE": mode}),
            array_size=array_size, integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            result_selector={"job_id.$": "$.JobId", "status.$": "$.Status"}, result_path=f"$.{name[0].lower() + name[1:]}",
        )

    def _analyze_map(self) -> sfn.DistributedMap:
        return self._committed_map("Analyze", "analyze", of="capture", result_path="$.analyze")

    def _committed_map(self, name: str, stage: str, of: str, result_path: str, run: str = "$.run") -> sfn.DistributedMap:
        """``stage``'s Lambda over the committed items of ``of`` in the run at ``run``."""
        item = sfn.DistributedMap(
            self, name,
            item_reader=CommittedItemsReader(self.bucket, of=of, run=run),
            item_selector={"run.$": run, "item_key.$": "$$.Map.Item.Value.Key"},
            # Per run, from its manifest (mycelium.cloud.manifest.MapConfig), as the ingest step returns it.
            max_concurrency_path="$.ingest.map.max_concurrency",
            tolerated_failure_percentage_path="$.ingest.map.tolerated_failure_percentage",
            # Standard children: exactly-once items, history per item, and redrive. An Express child would
            # cost less per item (see the README's cost table); Standard is also what moto's engine runs.
            map_execution_type=sfn.StateMachineType.STANDARD,
            result_writer_v2=ScopedResultWriter(self.bucket),
            result_selector={"map_run_arn.$": "$.MapRunArn", "results.$": "$.ResultWriterDetails"},
            result_path=result_path,
        )
        item.item_processor(self._invoke("AnalyzeChunk" if name == "Analyze" else f"{name}Item", stage,
                                         {"run.$": "$.run", "item_key.$": "$.item_key"}, result_path="$.done"))
        return item

    def _trigger(self, bucket_name: str) -> None:
        dlq = sqs.Queue(self, "TriggerDlq", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
                        retention_period=Duration.days(14))
        self.rule = events.Rule(
            self, "ManifestUploaded", event_pattern=manifest_pattern(bucket_name),
            description="an uploaded runs/<run>/manifest.json starts one execution for that run",
            targets=[targets.SfnStateMachine(self.state_machine, dead_letter_queue=dlq, retry_attempts=8,
                                             max_event_age=Duration.hours(2))],
        )

    def _acknowledge(self) -> None:
        sm = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"%s"}]}]}' % self.resolve(
            self.state_machine.node.default_child.logical_id)
        region = "<AWS::Region>" if Token.is_unresolved(self.region) else self.region
        account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
        execution = f"arn:<AWS::Partition>:states:{region}:{account}:execution:{sm}"
        lambdas = [Acknowledgment(
            id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:lambda:{region}:{account}:"
               f"function:{name}:*]",
            reason="lambda:InvokeFunction on the stage's function and its versions/aliases (CDK's grant).")
            for name in self.function_names.values()]
        Validations.of(self).acknowledge(
            *lambdas,
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::"
                              f"{self.bucket.bucket_name}/{MAP_RESULTS_PREFIX}/*]",
                           reason="The Distributed Map writes one folder per map run (named by Step Functions) "
                                  "under this prefix, and nothing else."),
            Acknowledgment(id="AwsSolutions::AwsSolutions-SQS3",
                           reason="This queue is itself the EventBridge target's dead-letter queue."),
            Acknowledgment(id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                           reason="X-Ray trace segments and CloudWatch Logs log delivery (the state machine's "
                                  "logging) do not support resource-level permissions."),
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:{region}:"
                              f"{account}:job-definition/*]",
                           reason="batch:SubmitJob is also authorized against the job definition's revisions; the "
                                  "job queue ARN in the same statement limits where jobs run."),
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{execution}:*]",
                           reason="The Distributed Map describes and stops its own child executions: executions of "
                                  "this state machine only."),
            Acknowledgment(id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{execution}/*:*]",
                           reason="Map runs of this state machine's executions only (redrive of the Distributed Map)."),
        )
