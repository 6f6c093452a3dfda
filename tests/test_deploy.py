"""deploy/feedvault.yaml (docs: operations.md#deploy): the CloudFormation template checked offline.

* cfn-lint finds nothing;
* the six task definitions have the Fargate shape of docs/operations.md#deploy, a stopTimeout
  above their ``STOP_GRACE_SECONDS``, and logs in a log group with the retention parameter;
* every task's command is parsed by the CLI's own parser, and every environment variable a task
  sets is read by the configuration loader that command runs: the loaders get a recording
  mapping, so "read" means looked up by the code, not listed by hand (standard AWS SDK variables
  excepted); the environment is also a valid configuration (no ConfigError);
* the IAM policies grant exactly the prefixes of docs/security.md#iam (no wildcard action, no
  bucket-wide object resource, ListBucket only under an ``s3:prefix`` condition), and each task's
  role covers the locations its environment names and nothing of the other workload;
* the optional spill volume (``SpillFileSystemId``): left empty, nothing of it is created and
  the rendered stack is today's; given, an EFS access point (the image's user, from the
  Dockerfile) is mounted in the three streaming tasks as ``SPILL_DIR``, and the streaming role
  may mount and write that file system through that access point only;
* the stack creates in moto's CloudFormation, and the ECS, IAM and CloudWatch Logs APIs then
  show the task definitions, roles and log groups. Moto's ``AWS::ECS::TaskDefinition`` keeps
  only the family, container definitions, volumes and memory: cpu, network mode,
  compatibilities, runtime platform and the two role ARNs are dropped there, so those are
  checked on the template itself. With the spill volume, moto (5.2) cannot create the stack:
  see :data:`MOTO_ACCESS_POINT_LIMIT` for what is checked instead;
* ``StreamFormat`` sets the stream tasks' ``FORMAT`` and, for Parquet, a prefix of its own
  (``streaming/parquet/<task>/``) that the streaming role's grants still cover;
* the Glue tables (``GlueTables``, docs: lake.md#glue-tables-and-athena), which moto cannot
  create (:data:`MOTO_SKIPS`), are checked on the template: partition projection, locations
  that hold exactly the keys the project writes (rendered by its own key template), SerDe and
  formats, and columns whose Glue types, mapped to Arrow, read back the Parquet files the project
  writes (stream windows through ``sinks.parquet``, a ``compact`` run, the batch jobs' tables)
  with the same names and types; the NDJSON tables' columns are the record fields of
  docs/data-formats.md and docs/order-books.md;
* the EventBridge rule (``EcommerceOnUpload``, docs: lake.md#event-driven-e-commerce-batch):
  created in moto, its target read back (cluster, role, task definition, retry policy,
  dead-letter queue); its role runs that task definition in that cluster only and passes the
  two roles of it only; the queue policy (moto skips it) lets EventBridge send for that rule
  only; and two ``ecommerce`` runs racing on the same files (one event per file) end as
  docs/lake.md says.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest
from botocore.parsers import ResponseParserError
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from batch.registry import JOBS
from feedvault.batch_run import prepare_batch
from feedvault.cli import build_parser
from feedvault.config import load_stream_config
from tests.harness import assert_prints_nothing, stream_settings

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "feedvault.yaml"
DOCKERFILE = TEMPLATE.parent.parent / "Dockerfile"

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "feedvault-data"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/feedvault:0.1.0"
PARAMETERS = {"ImageUri": IMAGE, "BucketName": BUCKET, "LogRetentionDays": "14"}
PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::StackName": "feedvault",
    "AWS::URLSuffix": "amazonaws.com",
}

FAMILIES = (
    "batch-computation",
    "batch-ecommerce",
    "batch-weather",
    "stream-bnb",
    "stream-btc",
    "stream-eth",
)
STREAM_FAMILIES = tuple(family for family in FAMILIES if family.startswith("stream-"))
# Where each task writes (and reads), as the original Fargate tasks ran them.
EXPECTED_LOCATIONS = {
    "stream-bnb": {"S3_BUCKET": BUCKET, "S3_PREFIX": "streaming/bnbusd/"},
    "stream-btc": {"S3_BUCKET": BUCKET, "S3_PREFIX": "streaming/btcusd/"},
    "stream-eth": {"S3_BUCKET": BUCKET, "S3_PREFIX": "streaming/ethusd/"},
    "batch-computation": {"OUTPUT_BUCKET": BUCKET, "OUTPUT_PREFIX": "batch/computation/"},
    "batch-ecommerce": {
        "OUTPUT_BUCKET": BUCKET,
        "OUTPUT_PREFIX": "batch/ecommerce/",
        "INPUT_BUCKET": BUCKET,
        "INPUT_PREFIX": "input/ecommerce/",
    },
    "batch-weather": {
        "OUTPUT_BUCKET": BUCKET,
        "OUTPUT_PREFIX": "batch/weather/",
        "INPUT_BUCKET": BUCKET,
        "INPUT_PREFIX": "input/weather/",
    },
}
EXPECTED_COMMANDS = {
    "stream-bnb": ["feedvault", "stream"],
    "stream-btc": ["feedvault", "stream"],
    "stream-eth": ["feedvault", "stream"],
    "batch-computation": ["feedvault", "batch", "computation"],
    "batch-ecommerce": ["feedvault", "batch", "ecommerce"],
    "batch-weather": ["feedvault", "batch", "weather"],
}
# Read by the AWS SDK (botocore), not by feedvault's loaders: allowed in a task's environment.
AWS_SDK_VARIABLES = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_STS_REGIONAL_ENDPOINTS",
    }
)
FARGATE_MAX_STOP_TIMEOUT = 120
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SPILL_FS = "fs-0123456789abcdef0"
SPILL = {"SpillFileSystemId": SPILL_FS}
SPILL_FS_ARN = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/{SPILL_FS}"
TASK_ROLES = ("TaskExecutionRole", "StreamingTaskRole", "BatchTaskRole")
EVENTS_ROLE = "EcommerceUploadEventsRole"
ON_UPLOAD_RESOURCES = {
    "EcommerceUploadRule": "AWS::Events::Rule",
    EVENTS_ROLE: "AWS::IAM::Role",
    "EcommerceUploadDeadLetterQueue": "AWS::SQS::Queue",
    "EcommerceUploadDeadLetterQueuePolicy": "AWS::SQS::QueuePolicy",
}
SUBNETS = "subnet-0123456789abcdef0,subnet-0123456789abcdef1"
SECURITY_GROUPS = "sg-0123456789abcdef0"
ON_UPLOAD = {
    "EcommerceOnUpload": "true",
    "TaskSubnets": SUBNETS,
    "TaskSecurityGroups": SECURITY_GROUPS,
}


# --- the template, with intrinsic functions resolved -------------------------------------------


def load_template() -> dict[str, Any]:
    template: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def parameter_values(template: Mapping[str, Any], **overrides: str) -> dict[str, str]:
    """Every parameter's value: the defaults, :data:`PARAMETERS`, then ``overrides``."""
    values = {
        name: str(spec["Default"])
        for name, spec in template["Parameters"].items()
        if "Default" in spec
    }
    values.update(PARAMETERS)
    values.update(overrides)
    missing = set(template["Parameters"]) - set(values)
    assert not missing, f"no test value for parameters {sorted(missing)}"
    return values


NO_VALUE = object()
"""``AWS::NoValue``: the list item or property is left out."""

_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class Resolver:
    """Resolve ``Ref``, ``Fn::Sub`` and ``Fn::GetAtt`` against parameter values, pseudo
    parameters and ``known`` values of resources (``Logical`` or ``Logical.Attr``); any other
    reference to a resource becomes ``<Logical>`` / ``<Logical.Attr>``. A reference to a
    resource that its ``Condition`` leaves out fails (CloudFormation refuses it)."""

    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, str],
        known: Mapping[str, str] | None = None,
    ) -> None:
        self.values = {**PSEUDO, **parameters, **(known or {})}
        self.lists = {
            name
            for name, spec in template.get("Parameters", {}).items()
            if spec["Type"] == "CommaDelimitedList"
        }
        self.conditions = {
            name: self.condition(spec) for name, spec in template.get("Conditions", {}).items()
        }
        self.created = {
            name
            for name, resource in template["Resources"].items()
            if "Condition" not in resource or self.conditions[resource["Condition"]]
        }
        self.resources = set(template["Resources"])

    def condition(self, node: Any) -> bool:
        """A condition of ``Fn::Equals``/``Fn::Not`` over values (all the template uses)."""
        (function, args), *_ = node.items()
        if function == "Fn::Equals":
            left, right = (self(arg) for arg in args)
            return bool(left == right)
        if function == "Fn::Not":
            return not self.condition(args[0])
        raise AssertionError(f"unhandled condition {node}")

    def ref(self, name: str) -> Any:
        if name in self.lists:  # a list parameter's Ref is the list
            return self.values[name].split(",")
        if name in self.values:
            return self.values[name]
        base = name.split(".", 1)[0]
        if base in self.resources:
            assert base in self.created, f"reference to {base}, which its condition leaves out"
            return f"<{name}>"
        raise AssertionError(f"reference to an unknown name {name!r}")

    def __call__(self, node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            if set(node) == {"Fn::If"}:
                name, when_true, when_false = node["Fn::If"]
                return self(when_true if self.conditions[name] else when_false)
            if set(node) == {"Ref"}:
                return self.ref(node["Ref"])
            if set(node) == {"Fn::GetAtt"}:
                target = node["Fn::GetAtt"]
                parts = target.split(".", 1) if isinstance(target, str) else list(target)
                return self.ref(".".join(parts))
            if set(node) == {"Fn::Sub"}:
                text = node["Fn::Sub"]
                assert isinstance(text, str), "only the one-argument Fn::Sub is used"
                substituted = _SUB_VAR.sub(lambda m: self.ref(m.group(1)), text)
                return substituted.replace("${!", "${")
            assert not any(key.startswith("Fn::") for key in node), f"unhandled {node}"
            resolved = {str(key): self(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not NO_VALUE}
        if isinstance(node, list):
            return [item for item in map(self, node) if item is not NO_VALUE]
        if isinstance(node, str):
            return str(node)
        return node


def resources_of_type(template: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def created_resources(template: Mapping[str, Any], **parameters: str) -> dict[str, str]:
    """Logical name -> type of each resource the stack creates with these parameters."""
    resolve = Resolver(template, parameter_values(template, **parameters))
    return {name: template["Resources"][name]["Type"] for name in resolve.created}


def task_definitions(template: Mapping[str, Any], **parameters: str) -> dict[str, dict[str, Any]]:
    """Family -> resolved Properties of each AWS::ECS::TaskDefinition."""
    resolve = Resolver(template, parameter_values(template, **parameters))
    out: dict[str, dict[str, Any]] = {}
    for resource in resources_of_type(template, "AWS::ECS::TaskDefinition").values():
        properties = resolve(resource["Properties"])
        out[properties["Family"]] = properties
    return out


def container(properties: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = properties["ContainerDefinitions"]
    result: dict[str, Any] = only
    return result


def environment(properties: Mapping[str, Any]) -> dict[str, str]:
    pairs = [(item["Name"], item["Value"]) for item in container(properties)["Environment"]]
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a variable is set twice: {names}"
    assert all(isinstance(value, str) for _, value in pairs), f"quote every value: {pairs}"
    return dict(pairs)


# --- lint and shape -----------------------------------------------------------------------------


def cfn_lint_command() -> list[str]:
    beside = Path(sys.executable).parent / "cfn-lint"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cfn-lint")
    if found is None:
        pytest.fail("cfn-lint is not installed (pip install -e '.[dev]')")
    return [found]


def test_cfn_lint_is_clean() -> None:
    assert_prints_nothing(*cfn_lint_command(), str(TEMPLATE))


def test_six_fargate_task_definitions(template: dict[str, Any]) -> None:
    definitions = task_definitions(template)
    assert sorted(definitions) == sorted(FAMILIES)
    for family, properties in definitions.items():
        assert properties["RequiresCompatibilities"] == ["FARGATE"], family
        assert properties["NetworkMode"] == "awsvpc", family
        assert str(properties["Cpu"]) == "1024", family
        assert str(properties["Memory"]) == "3072", family
        assert properties["ExecutionRoleArn"] == "<TaskExecutionRole.Arn>", family
        role = "StreamingTaskRole" if family.startswith("stream-") else "BatchTaskRole"
        assert properties["TaskRoleArn"] == f"<{role}.Arn>", family
        box = container(properties)
        assert box["Name"] == "feedvault", family  # run-task overrides name the container
        assert box["Image"] == IMAGE, family  # one image for every workload
        assert box["Essential"] is True, family
        assert box["Command"] == EXPECTED_COMMANDS[family], family
        assert "EntryPoint" not in box, family


def test_stop_timeout_leaves_the_stop_sequence_its_grace(template: dict[str, Any]) -> None:
    for family, properties in task_definitions(template).items():
        grace = float(environment(properties)["STOP_GRACE_SECONDS"])
        stop_timeout = container(properties)["StopTimeout"]
        assert grace + 10 <= stop_timeout <= FARGATE_MAX_STOP_TIMEOUT, family


def test_logs_go_to_log_groups_with_the_retention_parameter(template: dict[str, Any]) -> None:
    groups = resources_of_type(template, "AWS::Logs::LogGroup")
    assert groups
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    for family, properties in task_definitions(template).items():
        logging = container(properties)["LogConfiguration"]
        assert logging["LogDriver"] == "awslogs", family
        options = logging["Options"]
        assert options["awslogs-group"].strip("<>") in groups, family
        assert options["awslogs-region"] == REGION, family
        assert options["awslogs-stream-prefix"] == family, family


def test_outputs_name_cluster_task_definitions_and_roles(template: dict[str, Any]) -> None:
    outputs = {name: spec["Value"] for name, spec in template["Outputs"].items()}
    assert outputs["ClusterName"] == {"Ref": "Cluster"}
    for role in ("TaskExecutionRole", "StreamingTaskRole", "BatchTaskRole"):
        assert outputs[f"{role}Arn"] == {"Fn::GetAtt": [role, "Arn"]}
    defined = set(resources_of_type(template, "AWS::ECS::TaskDefinition"))
    assert {v["Ref"] for v in outputs.values() if set(v) == {"Ref"}} >= defined


# --- commands and environment against the configuration ------------------------------------------


class RecordingEnviron(Mapping[str, str]):
    """A read-only environment that records every name looked up (``[]``, ``get``, ``in``).
    Iterating over it is not a lookup: a name seen only that way does not count as read."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def names_read_by_configuration(command: list[str], environ: Mapping[str, str]) -> set[str]:
    """Parse ``command`` with the CLI's parser and run the configuration loader that command
    runs, on ``environ``; return the variable names it looked up. A ConfigError fails the
    test (the task's environment must be a valid configuration)."""
    assert command[0] == "feedvault", command
    args = build_parser().parse_args(command[1:])  # exits 2 on a command the CLI refuses
    recording = RecordingEnviron(environ)
    if args.command == "stream":
        assert args.out is None and args.streams is None  # the environment configures it
        load_stream_config(recording, out=args.out)
    elif args.command == "batch":
        assert args.in_url is None and args.out is None
        assert args.job in JOBS, args.job
        prepare_batch(args.job, recording, in_url=args.in_url, out_url=args.out)
    else:
        pytest.fail(f"task command {command} is neither stream nor batch")
    return recording.read


def expected_locations(family: str, stream_format: str = "ndjson.gz") -> dict[str, str]:
    """:data:`EXPECTED_LOCATIONS` with ``StreamFormat``: Parquet streams write under
    ``streaming/parquet/<task>/``, so no Glue table location holds both formats."""
    expected = dict(EXPECTED_LOCATIONS[family])
    if family in STREAM_FAMILIES and stream_format == "parquet":
        expected["S3_PREFIX"] = expected["S3_PREFIX"].replace("streaming/", "streaming/parquet/")
    return expected


STREAM_FORMATS = ("ndjson.gz", "ndjson.zst", "parquet")


@pytest.mark.parametrize(
    "extra",
    [{}, SPILL, {"StreamFormat": "ndjson.zst"}, {"StreamFormat": "parquet"}],
    ids=["defaults", "spill-volume", "ndjson-zst", "parquet"],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_task_environment_is_what_the_configuration_reads(
    template: dict[str, Any], family: str, extra: dict[str, str]
) -> None:
    properties = task_definitions(template, **extra)[family]
    env = environment(properties)
    command = container(properties)["Command"]
    read = names_read_by_configuration(command, env)
    unread = set(env) - read - AWS_SDK_VARIABLES
    assert not unread, f"{family} sets variables its configuration never reads: {sorted(unread)}"
    stream_format = extra.get("StreamFormat", "ndjson.gz")
    for name, value in expected_locations(family, stream_format).items():
        assert env.get(name) == value, (family, name)
    if family.startswith("stream-"):
        assert env["MAX_RUNTIME_SECONDS"] == "7200"
        assert env["STREAMS"]
        assert env["FORMAT"] == stream_format
        assert load_stream_config(env).sink.format == stream_format
    else:
        assert "FORMAT" not in env  # batch jobs choose their own formats


def test_recording_environ_sees_what_a_loader_looks_up() -> None:
    """The recorder itself: a variable the loader does not know is not reported as read."""
    env = stream_settings(S3_BUCKET="b-1", S3_PREFIX="streaming/x/", NOT_A_FEEDVAULT_SETTING="1")
    read = names_read_by_configuration(["feedvault", "stream"], env)
    assert {"S3_BUCKET", "S3_PREFIX", "MAX_RUNTIME_SECONDS", "STREAMS"} <= read
    assert "NOT_A_FEEDVAULT_SETTING" not in read
    assert "COMPUTATION_SEED" in names_read_by_configuration(
        ["feedvault", "batch", "computation"], {"OUTPUT_BUCKET": "b-1", "OUTPUT_PREFIX": "batch/"}
    )


# --- IAM -----------------------------------------------------------------------------------------

Grant = tuple[str, str, str]  # (action, resource, condition as canonical JSON or "")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def document_grants(role: str, documents: list[Mapping[str, Any]]) -> set[Grant]:
    """Every (action, resource, condition) the resolved policy ``documents`` allow."""
    grants: set[Grant] = set()
    for document in documents:
        for statement in _as_list(document["Statement"]):
            assert statement["Effect"] == "Allow", (role, statement)
            assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement)
            condition = statement.get("Condition")
            cond = json.dumps(condition, sort_keys=True) if condition else ""
            for action, resource in itertools.product(
                _as_list(statement["Action"]), _as_list(statement["Resource"])
            ):
                grants.add((action, resource, cond))
    return grants


def role_grants(
    template: Mapping[str, Any],
    role: str,
    known: Mapping[str, str] | None = None,
    **parameters: str,
) -> set[Grant]:
    """Every (action, resource, condition) an IAM role's inline policies allow, resolved."""
    resolve = Resolver(template, parameter_values(template, **parameters), known)
    properties = template["Resources"][role]["Properties"]
    assert "ManagedPolicyArns" not in properties, f"{role}: managed policies are not checked"
    return document_grants(role, [resolve(p["PolicyDocument"]) for p in properties["Policies"]])


def allows(grants: set[Grant], action: str, key: str | None = None, *, prefix: str = "") -> bool:
    """Whether ``grants`` allow ``action`` on object ``key`` in :data:`BUCKET`, or, for
    ``s3:ListBucket`` (``key`` None), a listing with ``Prefix=prefix``. IAM's ``*``/``?``
    match as fnmatch's do (no ARN here holds ``[``)."""
    for granted, resource, cond in grants:
        if granted != action:
            continue
        if key is not None:
            if fnmatch.fnmatchcase(f"arn:aws:s3:::{BUCKET}/{key}", resource):
                return True
            continue
        if resource != f"arn:aws:s3:::{BUCKET}":
            continue
        patterns = json.loads(cond)["StringLike"]["s3:prefix"] if cond else ["*"]
        if any(fnmatch.fnmatchcase(prefix, p) for p in _as_list(patterns)):
            return True
    return False


def _s3(path: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{path}"


@pytest.mark.parametrize("extra", [{}, SPILL], ids=["defaults", "spill-volume"])
def test_no_wildcard_actions_and_no_bucket_wide_object_resources(
    template: dict[str, Any], extra: dict[str, str]
) -> None:
    roles = resources_of_type(template, "AWS::IAM::Role")
    assert set(roles) == {*TASK_ROLES, EVENTS_ROLE}
    for role in roles:
        for action, resource, cond in role_grants(template, role, None, **extra):
            assert "*" not in action and "?" not in action, (role, action)
            assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), (role, action)
            if resource == "*":  # only where the action has no resource-level permissions
                assert action == "ecr:GetAuthorizationToken", (role, action)
            if action.startswith("elasticfilesystem:"):  # one file system, by its ARN
                assert resource == SPILL_FS_ARN, (role, action, resource)
            if action.startswith("s3:"):
                assert resource.startswith(f"arn:aws:s3:::{BUCKET}"), (role, resource)
                if action == "s3:ListBucket":
                    assert resource == f"arn:aws:s3:::{BUCKET}"
                    assert cond and "s3:prefix" in cond, (role, "ListBucket without prefix")
                    for pattern in _as_list(json.loads(cond)["StringLike"]["s3:prefix"]):
                        assert re.fullmatch(r"([A-Za-z0-9._=-]+/)+\*", pattern), pattern
                else:  # an object ARN under a literal first prefix, never the whole bucket
                    assert re.fullmatch(
                        rf"arn:aws:s3:::{re.escape(BUCKET)}/[A-Za-z0-9._=-]+/"
                        r"([A-Za-z0-9._=*-]+/)*\*",
                        resource,
                    ), (role, action, resource)


def test_streaming_role_writes_streaming_only(template: dict[str, Any]) -> None:
    listing = json.dumps({"StringLike": {"s3:prefix": "streaming/*"}}, sort_keys=True)
    assert role_grants(template, "StreamingTaskRole") == {
        ("s3:PutObject", _s3("streaming/*"), ""),
        ("s3:AbortMultipartUpload", _s3("streaming/*"), ""),
        # recovery completes an earlier run's manifest: it reads manifests (and a missing one
        # must be a 404, hence the listing), never trade objects
        ("s3:GetObject", _s3("streaming/*/_manifests/*"), ""),
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", listing),
    }


def test_batch_role_reads_its_inputs_and_writes_batch_only(template: dict[str, Any]) -> None:
    listing = json.dumps(
        {"StringLike": {"s3:prefix": ["input/ecommerce/*", "input/weather/*"]}}, sort_keys=True
    )
    assert role_grants(template, "BatchTaskRole") == {
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}", listing),
        ("s3:GetObject", _s3("input/ecommerce/*"), ""),
        ("s3:GetObject", _s3("input/weather/*"), ""),
        # ecommerce moves its processed inputs under {INPUT_PREFIX}processed/ (put the copy,
        # delete the original; a failed move puts originals back and deletes the copies)
        ("s3:PutObject", _s3("input/ecommerce/*"), ""),
        ("s3:DeleteObject", _s3("input/ecommerce/*"), ""),
        ("s3:PutObject", _s3("batch/*"), ""),
        ("s3:AbortMultipartUpload", _s3("batch/*"), ""),
    }
    # the input prefixes are parameters: the grants follow them
    moved = role_grants(
        template, "BatchTaskRole", EcommerceInputPrefix="orders/in/", WeatherInputPrefix="wx/"
    )
    assert ("s3:GetObject", _s3("orders/in/*"), "") in moved
    assert ("s3:PutObject", _s3("orders/in/*"), "") in moved
    assert ("s3:DeleteObject", _s3("orders/in/*"), "") in moved
    assert ("s3:GetObject", _s3("wx/*"), "") in moved


def test_execution_role_pulls_the_image_and_writes_logs(template: dict[str, Any]) -> None:
    repository = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/feedvault"
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:<{{}}>:log-stream:*"
    assert role_grants(template, "TaskExecutionRole") == {
        ("ecr:GetAuthorizationToken", "*", ""),
        ("ecr:BatchCheckLayerAvailability", repository, ""),
        ("ecr:BatchGetImage", repository, ""),
        ("ecr:GetDownloadUrlForLayer", repository, ""),
        ("logs:CreateLogStream", logs.format("StreamLogGroup"), ""),
        ("logs:PutLogEvents", logs.format("StreamLogGroup"), ""),
        ("logs:CreateLogStream", logs.format("BatchLogGroup"), ""),
        ("logs:PutLogEvents", logs.format("BatchLogGroup"), ""),
    }


def test_roles_are_assumed_by_ecs_tasks_only(template: dict[str, Any]) -> None:
    for name in TASK_ROLES:
        role = template["Resources"][name]
        (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}, name
        assert statement["Action"] == "sts:AssumeRole", name


@pytest.mark.parametrize("stream_format", STREAM_FORMATS)
def test_each_task_role_covers_the_locations_its_environment_names(
    template: dict[str, Any], stream_format: str
) -> None:
    streaming = role_grants(template, "StreamingTaskRole", StreamFormat=stream_format)
    batch = role_grants(template, "BatchTaskRole", StreamFormat=stream_format)
    assert streaming == role_grants(template, "StreamingTaskRole")  # the format changes no grant
    for family, properties in task_definitions(template, StreamFormat=stream_format).items():
        env = environment(properties)
        if family.startswith("stream-"):
            mine, other = streaming, batch
            prefix = env["S3_PREFIX"]
        else:
            mine, other = batch, streaming
            prefix = env["OUTPUT_PREFIX"]
        job = family.split("-", 1)[1]
        for key in (
            f"{prefix}_manifests/run.json",
            f"{prefix}trades/exchange=binance/symbol=BNB-USD/date=2026-01-01/hour=00/x.ndjson.gz",
            f"{prefix}book/exchange=binance/symbol=BNB-USD/date=2026-01-01/hour=00/x.parquet",
            f"{prefix}{job}/risk.json",
            f"{prefix}{job}/orders_kpis/orders_kpis.parquet",
        ):
            assert allows(mine, "s3:PutObject", key), (family, key)
            assert allows(mine, "s3:AbortMultipartUpload", key), (family, key)
            assert not allows(other, "s3:PutObject", key), (family, key)
            assert not allows(mine, "s3:DeleteObject", key), (family, key)
        if family.startswith("stream-"):  # recovery reads its own manifests, whatever the format
            assert allows(mine, "s3:ListBucket", prefix=f"{prefix}_manifests/"), family
            assert allows(mine, "s3:GetObject", f"{prefix}_manifests/run.json"), family
        if "INPUT_PREFIX" in env:
            inputs = env["INPUT_PREFIX"]
            assert allows(mine, "s3:ListBucket", prefix=inputs), family
            assert allows(mine, "s3:GetObject", f"{inputs}orders-1.csv"), family
            moves = family == "batch-ecommerce"  # the only job that moves its inputs
            for action, key in (
                ("s3:PutObject", f"{inputs}processed/orders-1.csv"),
                ("s3:DeleteObject", f"{inputs}orders-1.csv"),
                ("s3:PutObject", f"{inputs}orders-1.csv"),  # the undo of a failed move
                ("s3:DeleteObject", f"{inputs}processed/orders-1.csv"),
            ):
                assert allows(mine, action, key) == moves, (family, action, key)
    # nothing beyond the prefixes
    assert allows(streaming, "s3:ListBucket", prefix="streaming/bnbusd/_manifests/")
    assert allows(streaming, "s3:GetObject", "streaming/bnbusd/_manifests/x.json")
    assert not allows(streaming, "s3:ListBucket", prefix="")
    assert not allows(streaming, "s3:ListBucket", prefix="batch/")
    assert not allows(streaming, "s3:GetObject", "streaming/bnbusd/trades/x.ndjson.gz")
    assert not allows(streaming, "s3:DeleteObject", "streaming/bnbusd/_manifests/x.json")
    assert not allows(batch, "s3:ListBucket", prefix="")
    assert not allows(batch, "s3:ListBucket", prefix="streaming/")
    assert not allows(batch, "s3:GetObject", "streaming/bnbusd/x.ndjson.gz")
    assert not allows(batch, "s3:DeleteObject", "input/weather/obs.csv")
    assert not allows(batch, "s3:PutObject", "elsewhere/x")


def test_every_task_names_the_bucket_owner(template: dict[str, Any]) -> None:
    for family, properties in task_definitions(template).items():
        assert environment(properties)["S3_EXPECTED_BUCKET_OWNER"] == ACCOUNT, family
    other = "210987654321"
    for family, properties in task_definitions(template, BucketOwnerAccountId=other).items():
        assert environment(properties)["S3_EXPECTED_BUCKET_OWNER"] == other, family


def test_sse_kms_only_with_a_key_and_only_on_that_key(template: dict[str, Any]) -> None:
    for family, properties in task_definitions(template).items():
        env = environment(properties)
        assert "S3_SSE" not in env and "S3_SSE_KMS_KEY_ID" not in env, family
    for role in ("StreamingTaskRole", "BatchTaskRole"):
        assert not any(a.startswith("kms:") for a, _, _ in role_grants(template, role)), role

    for family, properties in task_definitions(template, KmsKeyArn=KMS_KEY).items():
        env = environment(properties)
        assert (env["S3_SSE"], env["S3_SSE_KMS_KEY_ID"]) == ("aws:kms", KMS_KEY), family
        command = container(properties)["Command"]
        assert "S3_SSE_KMS_KEY_ID" in names_read_by_configuration(command, env), family
    for role in ("StreamingTaskRole", "BatchTaskRole"):
        kms = {g for g in role_grants(template, role, KmsKeyArn=KMS_KEY) if g[0].startswith("kms:")}
        assert kms == {("kms:GenerateDataKey", KMS_KEY, ""), ("kms:Decrypt", KMS_KEY, "")}, role


# --- the spill volume (SpillFileSystemId) ------------------------------------------------------

SPILL_ACCESS_POINT_ARN = (
    f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-0123456789abcdef0"
)


def image_user() -> tuple[str, str]:
    """The uid and gid the image runs as: the Dockerfile's last ``USER uid:gid``."""
    users = re.findall(r"^USER\s+(\S+)\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert users, "the Dockerfile has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {users[-1]}: a numeric uid:gid is expected"
    return uid, gid


def test_parameter_groups_name_every_parameter_once(template: dict[str, Any]) -> None:
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]
    assert sorted(grouped) == sorted(template["Parameters"])
    (streaming,) = (g for g in groups if g["Label"]["default"] == "Streaming tasks")
    assert "SpillFileSystemId" in streaming["Parameters"]


def test_without_a_spill_file_system_nothing_of_it_is_created(template: dict[str, Any]) -> None:
    assert template["Parameters"]["SpillFileSystemId"]["Default"] == ""
    created = created_resources(template)
    assert set(created) == set(template["Resources"]) - {"SpillAccessPoint", *ON_UPLOAD_RESOURCES}
    assert template["Outputs"]["SpillAccessPointId"]["Condition"] == "UseSpillVolume"
    for family, properties in task_definitions(template).items():
        assert "Volumes" not in properties, family
        assert "MountPoints" not in container(properties), family
        # the configuration's default SPILL_DIR: the task's own disk, as before
        assert "SPILL_DIR" not in environment(properties), family
    for role in ("TaskExecutionRole", "StreamingTaskRole", "BatchTaskRole"):
        grants = role_grants(template, role)
        assert not any(action.startswith("elasticfilesystem:") for action, _, _ in grants), role


def test_spill_volume_is_the_access_point_mounted_as_spill_dir(template: dict[str, Any]) -> None:
    assert created_resources(template, **SPILL)["SpillAccessPoint"] == "AWS::EFS::AccessPoint"
    resolve = Resolver(template, parameter_values(template, **SPILL))
    access_point = resolve(template["Resources"]["SpillAccessPoint"]["Properties"])
    uid, gid = image_user()  # every NFS operation runs as the image's user, who owns the root
    assert access_point["FileSystemId"] == SPILL_FS
    assert access_point["PosixUser"] == {"Uid": uid, "Gid": gid}
    root = access_point["RootDirectory"]
    assert PurePosixPath(root["Path"]).is_absolute() and root["Path"] != "/"
    assert root["CreationInfo"] == {"OwnerUid": uid, "OwnerGid": gid, "Permissions": "0750"}

    spill_dirs: set[str] = set()
    for family, properties in task_definitions(template, **SPILL).items():
        env = environment(properties)
        box = container(properties)
        if family not in STREAM_FAMILIES:  # batch tasks never spill: unaffected
            assert "Volumes" not in properties, family
            assert "MountPoints" not in box, family
            assert "SPILL_DIR" not in env, family
            continue
        (volume,) = properties["Volumes"]
        assert volume == {
            "Name": volume["Name"],
            "EFSVolumeConfiguration": {
                "FilesystemId": SPILL_FS,
                "TransitEncryption": "ENABLED",
                "AuthorizationConfig": {"AccessPointId": "<SpillAccessPoint>", "IAM": "ENABLED"},
            },
        }, family
        (mount,) = box["MountPoints"]
        assert mount["SourceVolume"] == volume["Name"], family
        assert mount.get("ReadOnly", False) is False, family
        mounted = PurePosixPath(mount["ContainerPath"])
        spill_dir = PurePosixPath(env["SPILL_DIR"])
        assert mounted.is_absolute(), family
        assert spill_dir == mounted or mounted in spill_dir.parents, (family, spill_dir)
        assert load_stream_config(env).runtime.spill_dir == env["SPILL_DIR"], family
        spill_dirs.add(env["SPILL_DIR"])
    # One directory for the three: recovery takes only its own destination's spill and never a
    # live run's (the template's comment above the task definitions says why it is shared).
    assert len(spill_dirs) == 1, spill_dirs


def test_streaming_role_mounts_the_spill_file_system_through_its_access_point_only(
    template: dict[str, Any],
) -> None:
    known = {"SpillAccessPoint.Arn": SPILL_ACCESS_POINT_ARN}
    through = json.dumps(
        {"StringEquals": {"elasticfilesystem:AccessPointArn": SPILL_ACCESS_POINT_ARN}},
        sort_keys=True,
    )
    before = role_grants(template, "StreamingTaskRole")
    granted = role_grants(template, "StreamingTaskRole", known, **SPILL)
    assert before <= granted
    assert granted - before == {  # read and write; no ClientRootAccess, no other file system
        ("elasticfilesystem:ClientMount", SPILL_FS_ARN, through),
        ("elasticfilesystem:ClientWrite", SPILL_FS_ARN, through),
    }
    # the condition names the access point the task definitions mount
    unresolved = role_grants(template, "StreamingTaskRole", None, **SPILL) - before
    assert {
        json.loads(cond)["StringEquals"]["elasticfilesystem:AccessPointArn"]
        for *_, cond in unresolved
    } == {"<SpillAccessPoint.Arn>"}
    for role in ("TaskExecutionRole", "BatchTaskRole"):
        assert role_grants(template, role, None, **SPILL) == role_grants(template, role), role
    # with SSE-KMS too, both grants are there side by side
    both = role_grants(template, "StreamingTaskRole", known, KmsKeyArn=KMS_KEY, **SPILL)
    assert granted <= both and ("kms:GenerateDataKey", KMS_KEY, "") in both


# --- the stack in moto's CloudFormation -----------------------------------------------------------

_stack_counter = itertools.count(1)

MOTO_ACCESS_POINT_LIMIT = (
    "moto 5.2 cannot create the stack with SpillFileSystemId: its AWS::EFS::AccessPoint "
    "(moto/efs/models.py, class AccessPoint) implements create_from_cloudformation_json only. "
    "It has no get_cfn_attribute, so Fn::GetAtt SpillAccessPoint.Arn (the streaming role's "
    "condition) raises AttributeError inside CreateStack (an HTTP 500), and no "
    "physical_resource_id, so Ref SpillAccessPoint (the volumes' AccessPointId, the output) "
    "would resolve to moto's Python object, not the fsap- id. What moto can check is checked: "
    "the template's own access point, created by moto's CloudFormation and read back through "
    "its EFS API (test_spill_access_point_creates_in_moto); the rest is checked on the template."
)
MOTO_ACCESS_POINT_ERROR = "'AccessPoint' object has no attribute 'get_cfn_attribute'"

MOTO_SKIPS = frozenset({"AWS::Glue::Database", "AWS::Glue::Table", "AWS::SQS::QueuePolicy"})
"""Resource types moto (5.2) cannot create: its CloudFormation skips them with a warning
("Tried to parse AWS::Glue::Table but it's not supported by moto's CloudFormation
implementation"; moto/glue/models.py has no CloudFormation model) and lists them without id or
type, so the stack still completes and nothing of them exists. They are checked on the
template: the Glue tables by the tests above, the queue policy by
:func:`test_dead_letter_queue_takes_events_of_the_rule_only`. Moto keeps the rule's target but
drops its ``EcsParameters.NetworkConfiguration`` (an empty object in ``ListTargetsByRule``),
so that is checked on the template too (:func:`test_rule_runs_batch_ecommerce_per_object`)."""


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _wait_for_stack(cloudformation: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            return stack
        if time.monotonic() > deadline:
            pytest.fail(f"stack {name} still {stack['StackStatus']} after {timeout:.0f} s")
        time.sleep(0.1)


def _server_logged(caplog: Any, text: str, timeout: float = 5.0) -> bool:
    """Whether moto's server (a thread of this process, logging through werkzeug's logger)
    logged ``text``. It logs an HTTP 500's traceback just after answering: wait a little."""
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _policy_document(document: Any) -> Mapping[str, Any]:
    """A policy document from IAM's API: boto3 decodes the URL-encoded JSON into a dict; moto
    (5.2) returns the Python repr of the dict CloudFormation resolved for an inline policy."""
    if isinstance(document, Mapping):
        parsed: Any = dict(document)
    else:
        try:
            parsed = json.loads(document)
        except ValueError:
            parsed = ast.literal_eval(document)
    assert isinstance(parsed, dict)
    # moto keeps a list item that resolved to AWS::NoValue as null; CloudFormation drops it
    parsed["Statement"] = [item for item in _as_list(parsed["Statement"]) if item is not None]
    return parsed


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"KmsKeyArn": KMS_KEY, "BucketOwnerAccountId": "210987654321"},
        SPILL,
        {**ON_UPLOAD, "StreamFormat": "parquet"},
    ],
    ids=["defaults", "kms-and-owner", "spill-volume", "on-upload-parquet"],
)
def test_stack_creates_in_moto(
    s3_server: Any, template: dict[str, Any], extra: dict[str, str], caplog: Any
) -> None:
    endpoint = s3_server.endpoint
    cloudformation = _client("cloudformation", endpoint)
    efs = _client("efs", endpoint)
    name = f"feedvault-test-{os.getpid()}-{next(_stack_counter)}"
    spill = "SpillFileSystemId" in extra
    if spill:  # the parameter names an existing file system: one of moto's
        file_system = efs.create_file_system(CreationToken=name)["FileSystemId"]
        extra = {**extra, "SpillFileSystemId": file_system}
    try:
        cloudformation.create_stack(
            StackName=name,
            TemplateBody=TEMPLATE.read_text(),
            Parameters=[
                {"ParameterKey": k, "ParameterValue": v} for k, v in {**PARAMETERS, **extra}.items()
            ],
            Capabilities=["CAPABILITY_IAM"],
        )
    except ResponseParserError:  # moto answered HTTP 500: only its known gap is expected
        if spill and _server_logged(caplog, MOTO_ACCESS_POINT_ERROR):
            pytest.xfail(MOTO_ACCESS_POINT_LIMIT)
        raise
    try:
        stack = _wait_for_stack(cloudformation, name)
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        resources = cloudformation.describe_stack_resources(StackName=name)["StackResources"]
        # moto lists a resource its condition leaves out, or of a type it skips (MOTO_SKIPS),
        # as an entry without id or type
        types = {
            r["LogicalResourceId"]: r["ResourceType"] for r in resources if "LogicalResourceId" in r
        }
        stack_resources = created_resources(template, **extra)
        assert types == {
            name: kind for name, kind in stack_resources.items() if kind not in MOTO_SKIPS
        }
        assert len(resources) == len(template["Resources"])
        physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in resources
            if "LogicalResourceId" in r
        }
        known: dict[str, str] = {}
        if spill:
            (access_point,) = efs.describe_access_points(FileSystemId=file_system)["AccessPoints"]
            assert outputs["SpillAccessPointId"] == access_point["AccessPointId"]
            known["SpillAccessPoint.Arn"] = access_point["AccessPointArn"]
        else:
            assert "SpillAccessPointId" not in outputs

        ecs = _client("ecs", endpoint)
        (cluster,) = ecs.describe_clusters(clusters=[outputs["ClusterName"]])["clusters"]
        assert cluster["status"] == "ACTIVE"

        expected = task_definitions(template, **extra)
        log_groups = {
            "StreamLogGroup": f"/ecs/{name}/stream",
            "BatchLogGroup": f"/ecs/{name}/batch",
        }
        for family in FAMILIES:
            output = "".join(part.capitalize() for part in family.split("-"))
            arn = outputs[f"{output}TaskDefinitionArn"]
            assert f":task-definition/{family}:" in arn
            created = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
            assert created["family"] == family
            assert str(created["memory"]) == "3072"
            (box,) = created["containerDefinitions"]
            want = container(expected[family])
            assert box["name"] == "feedvault"
            assert box["image"] == IMAGE
            assert box["command"] == EXPECTED_COMMANDS[family]
            assert box["stopTimeout"] == want["StopTimeout"]
            # moto keeps AWS::NoValue list items as null; CloudFormation drops them
            env = {item["name"]: item["value"] for item in box["environment"] if item}
            assert env == environment(expected[family])
            # moto keeps a volume's EFSVolumeConfiguration under a key botocore does not know
            # ("eFSVolumeConfiguration"): the API answer shows the volume's name only
            volumes = [v["name"] for v in created.get("volumes") or []]
            assert volumes == [v["Name"] for v in expected[family].get("Volumes", [])]
            mounts = [
                {
                    "sourceVolume": m["SourceVolume"],
                    "containerPath": m["ContainerPath"],
                    "readOnly": m["ReadOnly"],
                }
                for m in want.get("MountPoints", [])
            ]
            assert (box.get("mountPoints") or []) == mounts
            options = box["logConfiguration"]["options"]
            group = want["LogConfiguration"]["Options"]["awslogs-group"].strip("<>")
            assert options["awslogs-group"] == log_groups[group]

        # the roles, with the policies moto resolved, grant what the template says
        iam = _client("iam", endpoint)
        known.update({"AWS::StackName": name, **log_groups})
        known.update({f"{role}.Arn": outputs[f"{role}Arn"] for role in TASK_ROLES})
        known["Cluster.Arn"] = cluster["clusterArn"]
        known["BatchEcommerceTaskDefinition"] = outputs["BatchEcommerceTaskDefinitionArn"]
        on_upload = EVENTS_ROLE in stack_resources
        for role in (*TASK_ROLES, EVENTS_ROLE) if on_upload else TASK_ROLES:
            role_name = physical[role]
            arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
            assert arn == outputs.get(f"{role}Arn", arn)
            documents = [
                _policy_document(
                    iam.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"]
                )
                for policy in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
            ]
            granted = role_grants(template, role, known, **extra)
            assert document_grants(role, documents) == granted, role

        groups = _client("logs", endpoint).describe_log_groups(logGroupNamePrefix=f"/ecs/{name}/")
        retention = {g["logGroupName"]: g.get("retentionInDays") for g in groups["logGroups"]}
        assert retention == {group: 14 for group in log_groups.values()}

        # the Glue resources are not in moto (MOTO_SKIPS): nothing was created there
        glue = _client("glue", endpoint)
        assert "feedvault" not in {d["Name"] for d in glue.get_databases()["DatabaseList"]}
        if on_upload:
            _check_rule_in_moto(endpoint, template, extra, outputs, cluster, physical)
        else:
            assert "EcommerceUploadRuleArn" not in outputs
    finally:
        cloudformation.delete_stack(StackName=name)


def _check_rule_in_moto(
    endpoint: str,
    template: dict[str, Any],
    extra: dict[str, str],
    outputs: Mapping[str, str],
    cluster: Mapping[str, Any],
    physical: Mapping[str, str],
) -> None:
    """The rule moto created, read back through EventBridge's and SQS's APIs."""
    events = _client("events", endpoint)
    rule_arn = outputs["EcommerceUploadRuleArn"]
    rule = events.describe_rule(Name=physical["EcommerceUploadRule"])
    assert rule["Arn"] == rule_arn and rule["State"] == "ENABLED"
    expected = Resolver(template, parameter_values(template, **extra))(
        template["Resources"]["EcommerceUploadRule"]["Properties"]
    )
    assert json.loads(rule["EventPattern"]) == expected["EventPattern"]
    (target,) = events.list_targets_by_rule(Rule=physical["EcommerceUploadRule"])["Targets"]
    assert target["Arn"] == cluster["clusterArn"]  # RunTask's target is the cluster
    role = _client("iam", endpoint).get_role(RoleName=physical[EVENTS_ROLE])["Role"]
    assert target["RoleArn"] == role["Arn"]
    assert (
        target["EcsParameters"]["TaskDefinitionArn"] == outputs["BatchEcommerceTaskDefinitionArn"]
    )
    assert (target["EcsParameters"]["TaskCount"], target["EcsParameters"]["LaunchType"]) == (
        1,
        "FARGATE",
    )
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 3600}
    sqs = _client("sqs", endpoint)
    queue = sqs.get_queue_attributes(
        QueueUrl=outputs["EcommerceUploadDeadLetterQueueUrl"], AttributeNames=["All"]
    )["Attributes"]
    assert target["DeadLetterConfig"] == {"Arn": queue["QueueArn"]}
    assert queue["SqsManagedSseEnabled"] == "true"  # encrypted at rest
    assert queue["MessageRetentionPeriod"] == "1209600"  # 14 days to look at a failed event


def test_spill_access_point_creates_in_moto(s3_server: Any, template: dict[str, Any]) -> None:
    """What moto can check of the spill volume (:data:`MOTO_ACCESS_POINT_LIMIT`): the
    template's own ``SpillAccessPoint``, with its parameter and condition, as a stack of its
    own, on a file system of moto's EFS; the access point is read back through the EFS API."""
    endpoint = s3_server.endpoint
    cloudformation = _client("cloudformation", endpoint)
    efs = _client("efs", endpoint)
    name = f"feedvault-test-{os.getpid()}-{next(_stack_counter)}"
    file_system = efs.create_file_system(CreationToken=name)["FileSystemId"]
    body = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"SpillFileSystemId": template["Parameters"]["SpillFileSystemId"]},
        "Conditions": {"UseSpillVolume": template["Conditions"]["UseSpillVolume"]},
        "Resources": {"SpillAccessPoint": template["Resources"]["SpillAccessPoint"]},
    }
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": "SpillFileSystemId", "ParameterValue": file_system}],
    )
    try:
        stack = _wait_for_stack(cloudformation, name)
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        (access_point,) = efs.describe_access_points(FileSystemId=file_system)["AccessPoints"]
        uid, gid = (int(n) for n in image_user())
        assert access_point["PosixUser"] == {"Uid": uid, "Gid": gid}
        assert access_point["RootDirectory"] == {
            "Path": template["Resources"]["SpillAccessPoint"]["Properties"]["RootDirectory"][
                "Path"
            ],
            "CreationInfo": {"OwnerUid": uid, "OwnerGid": gid, "Permissions": "0750"},
        }
        assert {"Key": "app", "Value": "feedvault"} in access_point["Tags"]
    finally:
        cloudformation.delete_stack(StackName=name)


# --- the Glue tables (GlueTables) ----------------------------------------------------------------

GLUE_TABLES = {
    # logical id: (table, dataset it reads)
    "TradesTable": "trades",
    "TradesParquetTable": "trades_parquet",
    "BookTable": "book",
    "BookParquetTable": "book_parquet",
    "CompactTradesTable": "compact_trades",
    "Bars1mTable": "bars_1m",
    "CompactBookTable": "compact_book",
    "BookSnapshotsTable": "book_snapshots",
    "EcommerceOrdersKpisTable": "ecommerce_orders_kpis",
    "EcommerceCategoryKpisTable": "ecommerce_category_kpis",
    "WeatherObservationsTable": "weather_observations",
    "WeatherDailyTable": "weather_daily",
    "WeatherAnomaliesTable": "weather_anomalies",
    "ReconcileDetailsTable": "reconcile_details",
}
# (table, format) of the stream datasets: NDJSON and Parquet never share a table or a location
STREAM_TABLES = {
    ("trades", "ndjson"): "trades",
    ("trades", "parquet"): "trades_parquet",
    ("book", "ndjson"): "book",
    ("book", "parquet"): "book_parquet",
}
# compact's datasets (docs: batch.md#compact) -> table
COMPACT_TABLES = {
    "trades": "compact_trades",
    "bars_1m": "bars_1m",
    "book": "compact_book",
    "book_snapshots": "book_snapshots",
}
# the batch jobs' Parquet tables: (job, table in {OUTPUT_PREFIX}{job}/{table}/) -> Glue table
JOB_TABLES = {
    ("ecommerce", "orders_kpis"): "ecommerce_orders_kpis",
    ("ecommerce", "category_kpis"): "ecommerce_category_kpis",
    ("weather", "observations"): "weather_observations",
    ("weather", "daily"): "weather_daily",
    ("weather", "anomalies"): "weather_anomalies",
    ("reconcile", "details"): "reconcile_details",
}
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
TEXT_INPUT = "org.apache.hadoop.mapred.TextInputFormat"
DAY = "2026-01-05"


def glue_tables(template: Mapping[str, Any], **parameters: str) -> dict[str, dict[str, Any]]:
    """Table name -> resolved ``TableInput`` (plus ``DatabaseName``) of each AWS::Glue::Table
    the stack creates with these parameters."""
    resolve = Resolver(template, parameter_values(template, **parameters))
    out: dict[str, dict[str, Any]] = {}
    for name, resource in resources_of_type(template, "AWS::Glue::Table").items():
        if name not in resolve.created:
            continue
        properties = resolve(resource["Properties"])
        table = {**properties["TableInput"], "DatabaseName": properties["DatabaseName"]}
        assert table["Name"] not in out, f"two tables named {table['Name']}"
        out[table["Name"]] = table
    return out


@pytest.fixture(scope="module")
def tables(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return glue_tables(template)


def partition_keys(table: Mapping[str, Any]) -> list[str]:
    return [key["Name"] for key in table.get("PartitionKeys", [])]


def columns(table: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]


def s3_key(url: str) -> str:
    """The key part of ``s3://BUCKET/key`` (the bucket is :data:`BUCKET`)."""
    head = f"s3://{BUCKET}/"
    assert url.startswith(head), url
    return url.removeprefix(head)


def partition_location(table: Mapping[str, Any], **values: str) -> str:
    """The key prefix of one partition: the table's ``storage.location.template`` filled in
    (every placeholder must be given, none left over)."""
    location: str = table["Parameters"]["storage.location.template"]
    assert set(re.findall(r"\$\{(\w+)\}", location)) == set(values), (location, values)
    for name, value in values.items():
        location = location.replace("${" + name + "}", value)
    return s3_key(location)


def stream_tasks(template: Mapping[str, Any], stream_format: str = "ndjson.gz") -> dict[str, str]:
    """Stream family -> its task segment in ``streaming/[parquet/]<task>/`` (its S3_PREFIX)."""
    out: dict[str, str] = {}
    for family in STREAM_FAMILIES:
        prefix = environment(task_definitions(template, StreamFormat=stream_format)[family])[
            "S3_PREFIX"
        ]
        out[family] = PurePosixPath(prefix).name
    return out


def test_glue_database_and_tables_only_with_glue_tables(template: dict[str, Any]) -> None:
    assert template["Parameters"]["GlueTables"]["Default"] == "true"  # on by default
    created = created_resources(template)
    assert created["LakeDatabase"] == "AWS::Glue::Database"
    assert {name for name, kind in created.items() if kind == "AWS::Glue::Table"} == set(
        GLUE_TABLES
    )
    off = created_resources(template, GlueTables="false")
    assert not any(kind.startswith("AWS::Glue::") for kind in off.values())
    assert set(created) - set(off) == {"LakeDatabase", *GLUE_TABLES}
    assert template["Outputs"]["GlueDatabaseName"]["Condition"] == "WithGlue"
    # the tasks' definitions and roles do not change with the tables: no runtime role uses them
    assert task_definitions(template) == task_definitions(template, GlueTables="false")
    for role in TASK_ROLES:
        assert role_grants(template, role) == role_grants(template, role, GlueTables="false")
        assert not any(
            a.startswith(("glue:", "athena:")) for a, _, _ in role_grants(template, role)
        )

    resolve = Resolver(template, parameter_values(template))
    database = resolve(template["Resources"]["LakeDatabase"]["Properties"])
    assert database["DatabaseInput"]["Name"] == "feedvault"
    pattern = template["Parameters"]["GlueDatabaseName"]["AllowedPattern"]
    assert re.fullmatch(pattern, "feedvault_prod") and not re.fullmatch(pattern, "Feedvault")
    renamed = Resolver(template, parameter_values(template, GlueDatabaseName="lake_2"))
    assert renamed(template["Resources"]["LakeDatabase"]["Properties"])["DatabaseInput"] == {
        **database["DatabaseInput"],
        "Name": "lake_2",
    }


def test_every_table_names_its_database_format_and_serde(
    tables: dict[str, dict[str, Any]],
) -> None:
    assert {name: name for name in tables} == {name: name for name in GLUE_TABLES.values()}
    ndjson = {STREAM_TABLES["trades", "ndjson"], STREAM_TABLES["book", "ndjson"]}
    for name, table in tables.items():
        assert re.fullmatch(r"[a-z0-9_]+", name), name  # Athena's names are lower case
        assert table["DatabaseName"] == "<LakeDatabase>", name
        assert table["TableType"] == "EXTERNAL_TABLE", name
        storage = table["StorageDescriptor"]
        serde = storage["SerdeInfo"]["SerializationLibrary"]
        if name in ndjson:
            assert table["Parameters"]["classification"] == "json", name
            assert (storage["InputFormat"], serde) == (TEXT_INPUT, JSON_SERDE), name
        else:
            assert table["Parameters"]["classification"] == "parquet", name
            assert (storage["InputFormat"], serde) == (PARQUET_INPUT, PARQUET_SERDE), name
        names = [column for column, _ in columns(table)] + partition_keys(table)
        assert len(names) == len(set(names)), f"{name}: a column is also a partition key"


def test_partitioned_tables_project_every_partition(
    template: dict[str, Any], tables: dict[str, dict[str, Any]]
) -> None:
    """Partition projection: no crawler, no MSCK REPAIR, partitions known the day they land."""
    from connectors.registry import PROTOCOLS

    tasks = sorted(stream_tasks(template).values())
    assert tasks == sorted(stream_tasks(template, "parquet").values())
    stream = set(STREAM_TABLES.values())
    for name in [*stream, *COMPACT_TABLES.values()]:
        table = tables[name]
        keys = partition_keys(table)
        want = ["task", "exchange", "symbol", "date", "hour"] if name in stream else []
        assert keys == (want or ["exchange", "symbol", "date"]), name
        types = {key["Name"]: key["Type"] for key in table["PartitionKeys"]}
        params = table["Parameters"]
        projection = {k.removeprefix("projection."): v for k, v in params.items() if "." in k}
        expected = {
            "enabled": "true",
            "exchange.type": "enum",
            "exchange.values": ",".join(sorted(PROTOCOLS)),  # every connector, binanceus too
            "symbol.type": "injected",  # a query names its symbol (docs/lake.md)
            "date.type": "date",
            "date.format": "yyyy-MM-dd",
            "date.range": "2024-01-01,NOW",
            "date.interval": "1",
            "date.interval.unit": "DAYS",
        }
        if name in stream:
            expected |= {
                "task.type": "enum",
                "task.values": ",".join(tasks),
                "hour.type": "integer",
                "hour.range": "0,23",
                "hour.digits": "2",
            }
        expected["storage.location.template"] = params["storage.location.template"]
        assert projection == expected, name
        assert types == {k: ("int" if k == "hour" else "string") for k in keys}, name
        # the table's Location is the root every partition location lies under
        template_key = s3_key(params["storage.location.template"])
        root = s3_key(table["StorageDescriptor"]["Location"])
        assert template_key.startswith(root) and root.endswith("/"), name
        assert "${" not in root, name
    for name in set(tables) - stream - set(COMPACT_TABLES.values()):  # one folder each
        assert "PartitionKeys" not in tables[name], name
        assert not any(k.startswith("projection.") for k in tables[name]["Parameters"]), name


def _window_key(prefix: str, dataset: str, extension: str) -> tuple[str, dict[str, str]]:
    """A key the stream writes (its own key template) and the partition values it holds."""
    from sinks.keys import KeyTemplate

    start = 1_767_582_000 * 1_000_000_000  # 2026-01-05T03:00:00Z
    partition = {"exchange": "binanceus", "symbol": "BTC-USD"}
    key = KeyTemplate().render(
        prefix=prefix,
        dataset=dataset,
        partition=partition,
        window_start_ns=start,
        run_id="20260105T025900Z-3f2a9c1d",
        seq=0,
        ext=extension,
    )
    return key, {**partition, "date": DAY, "hour": "03"}


@pytest.mark.parametrize("stream_format", STREAM_FORMATS)
def test_stream_tables_hold_exactly_the_keys_the_stream_writes(
    template: dict[str, Any], stream_format: str
) -> None:
    """Each stream task's objects (keys rendered by the project's own key template under the
    task's S3_PREFIX) lie in one partition of the table of their format, and in no partition
    of the other format's table."""
    tables = glue_tables(template, StreamFormat=stream_format)
    kind = "parquet" if stream_format == "parquet" else "ndjson"
    other = "ndjson" if kind == "parquet" else "parquet"
    for family, properties in task_definitions(template, StreamFormat=stream_format).items():
        if family not in STREAM_FAMILIES:
            continue
        env = environment(properties)
        task = PurePosixPath(env["S3_PREFIX"]).name
        for dataset in ("trades", "book"):
            key, values = _window_key(env["S3_PREFIX"], dataset, stream_format)
            table = tables[STREAM_TABLES[dataset, kind]]
            location = partition_location(table, task=task, **values)
            assert key.startswith(location), (key, location)
            assert "/" not in key.removeprefix(location), (key, location)
            foreign = tables[STREAM_TABLES[dataset, other]]
            for any_task in table["Parameters"]["projection.task.values"].split(","):
                assert not key.startswith(partition_location(foreign, task=any_task, **values))


# Glue's types as Arrow types. Glue's `timestamp` has no unit: Athena reads any Parquet
# timestamp (at millisecond precision), Spark at microseconds; the files must hold UTC ones.
_GLUE_ARROW = {
    "string": "string",
    "bigint": "int64",
    "int": "int32",
    "double": "double",
    "boolean": "bool",
}


def arrow_type(glue: str, found: Any) -> Any:
    """The Arrow type the Glue type ``glue`` reads as; for ``timestamp``, ``found`` (the
    file's own type) must be a UTC timestamp, whose unit is kept."""
    import pyarrow as pa

    if glue == "timestamp":
        assert found is not None and pa.types.is_timestamp(found), (glue, found)
        assert found.tz == "UTC", found
        return pa.timestamp(found.unit, tz="UTC")
    decimal = re.fullmatch(r"decimal\((\d+),(\d+)\)", glue)
    if decimal:
        return pa.decimal128(int(decimal.group(1)), int(decimal.group(2)))
    return pa.type_for_alias(_GLUE_ARROW[glue])


def assert_reads_as_glue_table(table: Mapping[str, Any], body: bytes, where: str) -> int:
    """The Parquet file ``body`` has exactly the Glue table's columns (names, order, types
    mapped to Arrow) and none of its partition keys, and reads with that schema; its rows."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    found = pq.ParquetFile(io.BytesIO(body)).schema_arrow
    glue = pa.schema(
        [
            (name, arrow_type(kind, found.field(name).type if name in found.names else None))
            for name, kind in columns(table)
        ]
    )
    assert found.names == glue.names, (table["Name"], where)
    for field in glue:
        assert found.field(field.name).type == field.type, (table["Name"], where, field.name)
    assert not set(found.names) & set(partition_keys(table)), (table["Name"], where)
    rows: int = pq.read_table(io.BytesIO(body), schema=glue).num_rows
    return rows


def _stream_records() -> dict[str, list[Any]]:
    from engine.book_records import BookLevel
    from engine.records import Trade

    ts = 1_767_582_000_000_000
    trades = [
        Trade(
            "binanceus", "BTC-USD", "BTCUSD", "1", "97000.12", "0.00100000", "buy", ts, ts * 1000
        ),
        Trade("binanceus", "BTC-USD", "BTCUSD", "2", "1e-3", "2", "sell", ts + 1, ts * 1000 + 9),
    ]
    book = [
        BookLevel(
            "binanceus", "BTC-USD", "BTCUSD", ts, ts * 1000, "7", True, "bid", "96999.9", "1"
        ),
        BookLevel(
            "binanceus", "BTC-USD", "BTCUSD", ts, ts * 1000, "7", True, "ask", "97000.1", "2"
        ),
        BookLevel(
            "binanceus",
            "BTC-USD",
            "BTCUSD",
            ts + 5,
            ts * 1000 + 5,
            None,
            False,
            "bid",
            "96999.9",
            "0",
        ),
    ]
    return {"trades": trades, "book": book}


def _documented_fields(page: str, heading: str) -> list[tuple[str, str]]:
    """The ``| `field` | type | ...`` rows of the first table under ``heading``."""
    text = (TEMPLATE.parent.parent / "docs" / page).read_text()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", section, flags=re.MULTILINE)


NDJSON_TYPES = {
    "string": "string",
    "str": "string",
    "str or null": "string",
    "integer": "bigint",
    "int": "bigint",
    "bool": "boolean",
}


@pytest.mark.parametrize(
    ("dataset", "page", "heading"),
    [
        ("trades", "data-formats.md", "## Trade records"),
        ("book", "order-books.md", "## The book schema"),
    ],
)
def test_ndjson_tables_are_the_documented_record_fields(
    tables: dict[str, dict[str, Any]], dataset: str, page: str, heading: str
) -> None:
    """The NDJSON tables' columns are the record's documented fields but the partition keys
    (exchange and symbol, in the key), in order; prices and sizes as ``string`` (the exact
    text; CAST in queries), times as ``bigint`` (µs, ns); and the records the project encodes
    carry exactly those fields plus the partition keys."""
    from sinks.encoders import decode_object, make_encoder

    table = tables[STREAM_TABLES[dataset, "ndjson"]]
    documented = _documented_fields(page, heading)
    assert documented, (page, heading)
    expected = [
        (f, NDJSON_TYPES[t.strip()]) for f, t in documented if f not in ("exchange", "symbol")
    ]
    assert columns(table) == expected
    for stream_format in ("ndjson.gz", "ndjson.zst"):
        encoder = make_encoder(stream_format, dataset=dataset)
        encoder.write(_stream_records()[dataset])
        key, _ = _window_key("streaming/btcusd/", dataset, stream_format)
        for record in decode_object(key, encoder.finish()):
            assert list(record) == [f for f, _ in documented], stream_format


@pytest.mark.parametrize("dataset", ["trades", "book"])
def test_stream_parquet_tables_read_the_stream_windows(
    tables: dict[str, dict[str, Any]], dataset: str
) -> None:
    """A window as the stream writes it with FORMAT=parquet (the sink's own encoder, the
    default key template's partition fields left out) reads with its Glue table's schema."""
    from sinks.encoders import make_encoder

    encoder = make_encoder(
        "parquet", dataset=dataset, partition={"exchange": "binanceus", "symbol": "BTC-USD"}
    )
    records = _stream_records()[dataset]
    encoder.write(records)
    body = encoder.finish()
    table = tables[STREAM_TABLES[dataset, "parquet"]]
    assert assert_reads_as_glue_table(table, body, dataset) == len(records)


def _book_object(day: str) -> bytes:
    """One book object as a stream writes it (NDJSON, gzip): a snapshot at midnight, then a
    change every second for three seconds (so the day has snapshot instants)."""
    import datetime as dt

    from engine.book_records import BookLevel
    from sinks.encoders import make_encoder

    us = int(dt.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()) * 1_000_000 + 1

    def row(seconds: int, snapshot: bool, side: str, price: str, size: str) -> BookLevel:
        ts = us + seconds * 1_000_000
        seq = str(10 + seconds)
        return BookLevel(
            "binance", "BTC-USDT", "BTCUSDT", ts, ts * 1000, seq, snapshot, side, price, size
        )

    rows = [row(0, True, "bid", "100.5", "2"), row(0, True, "ask", "100.7", "1")]
    rows += [row(s, False, "bid", "100.6", str(s)) for s in (1, 2, 3)]
    encoder = make_encoder("ndjson.gz", dataset="book")
    encoder.write(rows)
    return encoder.finish()


def _files_under(root: Path, prefix: str) -> dict[str, bytes]:
    """``{key: bytes}`` of the files under ``root/prefix`` (keys relative to ``root``)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / prefix).rglob("*"))
        if path.is_file()
    }


def test_compact_tables_read_a_compact_run(
    template: dict[str, Any], tables: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """``compact`` run on a sample stream prefix with trades and a book object, its outputs
    written under the stack's ``BatchOutputPrefix`` (``--out`` as a task would): every output
    file lies in one partition of its table, and reads with that table's schema."""
    from batch.compact_sample import sample_compact
    from feedvault.batch_run import run_batch

    src, root = tmp_path / "streaming", tmp_path / "bucket"
    for key, body in sample_compact(7).items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(body)
    book_key = f"book/exchange=binance/symbol=BTC-USDT/date={DAY}/hour=00/"
    (src / book_key).mkdir(parents=True)
    (src / book_key / "20260105T000000Z-killedrun-000000.ndjson.gz").write_bytes(_book_object(DAY))
    prefix = parameter_values(template)["BatchOutputPrefix"]
    (root / prefix).mkdir(parents=True)
    env = {
        "LOG_FORMAT": "json",
        "RUN_ID": "compact-1",
        "COMPACT_FROM": DAY,
        "COMPACT_TO": "2026-01-06",
    }
    assert run_batch("compact", env, f"file://{src}/", f"file://{root}/{prefix}") == 0

    seen: dict[str, int] = {}
    for key, body in _files_under(root, f"{prefix}compact/").items():
        if not key.endswith(".parquet"):
            continue  # the reports
        dataset = key.removeprefix(f"{prefix}compact/").split("/", 1)[0]
        table = tables[COMPACT_TABLES[dataset]]
        values = dict(re.findall(r"(exchange|symbol|date)=([^/]+)", key))
        location = partition_location(table, **values)
        assert PurePosixPath(key).parent == PurePosixPath(location), (key, location)
        seen[table["Name"]] = seen.get(table["Name"], 0) + assert_reads_as_glue_table(
            table, body, key
        )
    assert set(seen) == set(COMPACT_TABLES.values()) and all(seen.values()), seen


@pytest.mark.parametrize("job", ["ecommerce", "weather", "reconcile"])
def test_job_tables_read_the_jobs_outputs(
    template: dict[str, Any], tables: dict[str, dict[str, Any]], tmp_path: Path, job: str
) -> None:
    """Each batch job run on its sample input, with the OUTPUT_PREFIX the stack gives it (its
    task definition's; reconcile has none: ``BatchOutputPrefix``): each table's Glue location
    holds exactly its ``{table}.parquet``, which reads with the table's schema."""
    from batch import samples
    from feedvault.batch_run import run_batch

    families = task_definitions(template)
    if f"batch-{job}" in families:
        prefix = environment(families[f"batch-{job}"])["OUTPUT_PREFIX"]
    else:
        prefix = parameter_values(template)["BatchOutputPrefix"]
    src, root = tmp_path / "input", tmp_path / "bucket"
    for name, body in getattr(samples, f"sample_{job}")(11).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(body)
    (root / prefix).mkdir(parents=True)
    env = {"LOG_FORMAT": "json", "RUN_ID": f"{job}-1"}
    assert run_batch(job, env, f"file://{src}/", f"file://{root}/{prefix}") == 0
    mine = {stem: name for (owner, stem), name in JOB_TABLES.items() if owner == job}
    assert mine
    for stem, name in mine.items():
        location = s3_key(tables[name]["StorageDescriptor"]["Location"])
        files = _files_under(root, location)
        assert list(files) == [f"{location}{stem}.parquet"], (name, list(files))
        assert (
            assert_reads_as_glue_table(tables[name], files[f"{location}{stem}.parquet"], name) > 0
        )


# --- the event-driven e-commerce batch (EcommerceOnUpload) ---------------------------------------


def test_the_rule_is_off_by_default_and_needs_a_network(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EcommerceOnUpload"]["Default"] == "false"
    assert not set(ON_UPLOAD_RESOURCES) & set(created_resources(template))
    created = created_resources(template, **ON_UPLOAD)
    assert {name: created[name] for name in ON_UPLOAD_RESOURCES} == ON_UPLOAD_RESOURCES
    for output in ("EcommerceUploadRuleArn", "EcommerceUploadDeadLetterQueueUrl"):
        assert template["Outputs"][output]["Condition"] == "EcommerceOnUpload"
    # the template's Rules refuse the rule without subnets or security groups (an empty list
    # parameter is [""]); nothing else depends on them
    rule = template["Rules"]["EcommerceOnUploadNetwork"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EcommerceOnUpload"}, "true"]}
    asserted = set()
    for assertion in rule["Assertions"]:
        (every_member_empty,) = assertion["Assert"]["Fn::Not"]
        parameter, value = every_member_empty["Fn::EachMemberEquals"]
        assert value == ""
        asserted.add(parameter["Ref"])
    assert asserted == {"TaskSubnets", "TaskSecurityGroups"}
    # the stream and batch tasks are the same with or without the rule, except that with it
    # a batch-ecommerce run that finds nothing new (the other runs started by the same files,
    # the job's own moves under processed/) completes doing nothing instead of failing
    with_rule, without = task_definitions(template, **ON_UPLOAD), task_definitions(template)
    assert environment(without["batch-ecommerce"])["NO_NEW_INPUT"] == "fail"
    assert environment(with_rule["batch-ecommerce"])["NO_NEW_INPUT"] == "succeed"
    for properties in (with_rule["batch-ecommerce"], without["batch-ecommerce"]):
        variables = container(properties)["Environment"]
        variables[:] = [item for item in variables if item["Name"] != "NO_NEW_INPUT"]
    assert with_rule == without
    for role in TASK_ROLES:
        assert role_grants(template, role, **ON_UPLOAD) == role_grants(template, role)


def test_rule_runs_batch_ecommerce_per_object(template: dict[str, Any]) -> None:
    """One S3 Object Created event under the e-commerce input prefix of the bucket -> one
    RunTask of batch-ecommerce (Fargate, the given network) in the stack's cluster, retried,
    then dead-lettered."""
    resolve = Resolver(template, parameter_values(template, **ON_UPLOAD))
    rule = resolve(template["Resources"]["EcommerceUploadRule"]["Properties"])
    ecommerce = environment(task_definitions(template)["batch-ecommerce"])
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [ecommerce["INPUT_BUCKET"]]},
            "object": {"key": [{"prefix": ecommerce["INPUT_PREFIX"]}]},
        },
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == "<Cluster.Arn>"
    assert target["RoleArn"] == f"<{EVENTS_ROLE}.Arn>"
    assert target["EcsParameters"] == {
        "TaskDefinitionArn": "<BatchEcommerceTaskDefinition>",
        "TaskCount": 1,
        "LaunchType": "FARGATE",
        "PlatformVersion": "LATEST",
        "NetworkConfiguration": {
            "AwsVpcConfiguration": {
                "Subnets": SUBNETS.split(","),
                "SecurityGroups": SECURITY_GROUPS.split(","),
                "AssignPublicIp": "DISABLED",
            }
        },
    }
    assert target["DeadLetterConfig"] == {"Arn": "<EcommerceUploadDeadLetterQueue.Arn>"}
    # a refused RunTask (throttled, no capacity) is retried for up to an hour, then dead-lettered
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 3600}
    # the prefix follows the parameter the task reads
    moved = Resolver(
        template, parameter_values(template, EcommerceInputPrefix="orders/", **ON_UPLOAD)
    )
    pattern = moved(template["Resources"]["EcommerceUploadRule"]["Properties"])["EventPattern"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "orders/"}]


def test_events_role_runs_that_task_definition_in_that_cluster_only(
    template: dict[str, Any],
) -> None:
    role = template["Resources"][EVENTS_ROLE]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    in_cluster = json.dumps({"ArnEquals": {"ecs:cluster": "<Cluster.Arn>"}}, sort_keys=True)
    to_ecs = json.dumps(
        {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}, sort_keys=True
    )
    assert role_grants(template, EVENTS_ROLE, **ON_UPLOAD) == {
        ("ecs:RunTask", "<BatchEcommerceTaskDefinition>", in_cluster),
        # the task definition's own two roles, nothing else
        ("iam:PassRole", "<TaskExecutionRole.Arn>", to_ecs),
        ("iam:PassRole", "<BatchTaskRole.Arn>", to_ecs),
    }
    ecommerce = resources_of_type(template, "AWS::ECS::TaskDefinition")[
        "BatchEcommerceTaskDefinition"
    ]
    assert ecommerce["Properties"]["ExecutionRoleArn"] == {
        "Fn::GetAtt": ["TaskExecutionRole", "Arn"]
    }
    assert ecommerce["Properties"]["TaskRoleArn"] == {"Fn::GetAtt": ["BatchTaskRole", "Arn"]}


def test_dead_letter_queue_takes_events_of_the_rule_only(template: dict[str, Any]) -> None:
    """The queue policy (moto skips it, :data:`MOTO_SKIPS`): EventBridge may send to the
    queue for this rule only; without it EventBridge cannot use the dead-letter queue."""
    resolve = Resolver(template, parameter_values(template, **ON_UPLOAD))
    queue = resolve(template["Resources"]["EcommerceUploadDeadLetterQueue"]["Properties"])
    assert queue["SqsManagedSseEnabled"] is True
    policy = resolve(template["Resources"]["EcommerceUploadDeadLetterQueuePolicy"]["Properties"])
    assert policy["Queues"] == ["<EcommerceUploadDeadLetterQueue>"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement == {
        "Sid": statement["Sid"],
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": "<EcommerceUploadDeadLetterQueue.Arn>",
        "Condition": {"ArnEquals": {"aws:SourceArn": "<EcommerceUploadRule.Arn>"}},
    }


ORDERS_HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
ORDERS = {
    "a.csv": (ORDERS_HEADER + "A1,C1,2024-05-01,books,B1,2,12.50,false\n").encode(),
    "b.csv": (ORDERS_HEADER + "B1,C2,2024-05-02,games,G1,1,3.00,true\n").encode(),
}


@pytest.mark.parametrize("b_arrives", ["before", "during"], ids=["same-files", "one-more-file"])
async def test_two_ecommerce_runs_racing_on_the_same_files(tmp_path: Path, b_arrives: str) -> None:
    """Two events, two tasks (docs: lake.md#event-driven-e-commerce-batch): run A lists and
    reads the new inputs, then run B runs from start to end, then A goes on. A file two runs
    both took is moved by each (the same bytes put twice under processed/, the second delete
    finds nothing: S3 and the file store both treat that as done), both runs complete, and the
    outputs are those of the run that wrote last: with the same files (``same-files``) the
    same bytes; when B also saw a file that arrived after A listed (``one-more-file``), A's
    outputs, without it, replace B's, and that file is only under processed/ and in B's
    manifest."""
    import asyncio

    from engine.settings import Env
    from feedvault.batch_run import BatchRun
    from sinks.local import FileWriter

    src, out = tmp_path / "input", tmp_path / "out"
    src.mkdir()
    (src / "a.csv").write_bytes(ORDERS["a.csv"])
    if b_arrives == "before":
        (src / "b.csv").write_bytes(ORDERS["b.csv"])
    env = {"LOG_FORMAT": "json"}
    outputs_of_b: dict[str, bytes] = {}

    def ecommerce(run_id: str, store: FileWriter | None = None) -> BatchRun:
        """The task's run, in process (no signal handlers: B runs in a thread)."""
        run_env = {**env, "RUN_ID": run_id}
        config, job = prepare_batch(
            "ecommerce", run_env, in_url=f"file://{src}/", out_url=f"file://{out}/"
        )
        return BatchRun(
            config,
            job,
            env=Env(run_env),
            install_signal_handlers=False,
            input_store=store,
            is_tty=False,
        )

    def run_b() -> None:
        if b_arrives == "during":
            (src / "b.csv").write_bytes(ORDERS["b.csv"])
        assert asyncio.run(ecommerce("b").run()) == 0
        outputs_of_b.update(_outputs(out))

    class RunBWhileAReads(FileWriter):
        """A's input store: once A has read its last input, B runs to its end."""

        async def get(self, key: str) -> bytes:
            body = await super().get(key)
            if key == ("b.csv" if b_arrives == "before" else "a.csv") and not outputs_of_b:
                await asyncio.to_thread(run_b)
            return body

    assert await ecommerce("a", RunBWhileAReads(src)).run() == 0
    assert outputs_of_b, "B did not run while A was reading"

    a, b = _manifest(out, "a"), _manifest(out, "b")
    assert (a["status"], b["status"]) == ("complete", "complete")
    assert b["counters"]["inputs_moved"] == 2  # B took both
    a_took = 2 if b_arrives == "before" else 1
    assert a["counters"]["inputs_moved"] == a_took  # and A moved what it took again
    # every input once under processed/, with its bytes; nothing left to process
    assert {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*.csv")} == {
        f"processed/{name}": body for name, body in ORDERS.items()
    }
    final = _outputs(out)
    orders = final["ecommerce/orders_kpis.jsonl"].decode().splitlines()
    if b_arrives == "before":
        assert final == outputs_of_b  # the same inputs, the same bytes
        assert len(orders) == 2
    else:
        assert final != outputs_of_b  # A wrote last: its outputs, without b.csv, remain
        assert [json.loads(line)["order_date"] for line in orders] == ["2024-05-01"]
        days = outputs_of_b["ecommerce/orders_kpis.jsonl"].decode().splitlines()
        assert [json.loads(line)["order_date"] for line in days] == ["2024-05-01", "2024-05-02"]


def _manifest(out: Path, run_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "_manifests" / f"{run_id}.json").read_bytes())
    return loaded


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        key: body
        for key, body in _files_under(out, "").items()
        if not key.startswith("_manifests/")
    }
