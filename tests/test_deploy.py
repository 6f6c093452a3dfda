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
  see :data:`MOTO_ACCESS_POINT_LIMIT` for what is checked instead.
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

    def ref(self, name: str) -> str:
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


@pytest.mark.parametrize("extra", [{}, SPILL], ids=["defaults", "spill-volume"])
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
    for name, value in EXPECTED_LOCATIONS[family].items():
        assert env.get(name) == value, (family, name)
    if family.startswith("stream-"):
        assert env["MAX_RUNTIME_SECONDS"] == "7200"
        assert env["STREAMS"]


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
    assert set(roles) == {"TaskExecutionRole", "StreamingTaskRole", "BatchTaskRole"}
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
    for name, role in resources_of_type(template, "AWS::IAM::Role").items():
        (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}, name
        assert statement["Action"] == "sts:AssumeRole", name


def test_each_task_role_covers_the_locations_its_environment_names(
    template: dict[str, Any],
) -> None:
    streaming = role_grants(template, "StreamingTaskRole")
    batch = role_grants(template, "BatchTaskRole")
    for family, properties in task_definitions(template).items():
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
            f"{prefix}{job}/risk.json",
        ):
            assert allows(mine, "s3:PutObject", key), (family, key)
            assert allows(mine, "s3:AbortMultipartUpload", key), (family, key)
            assert not allows(other, "s3:PutObject", key), (family, key)
            assert not allows(mine, "s3:DeleteObject", key), (family, key)
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
    assert set(created) == set(template["Resources"]) - {"SpillAccessPoint"}
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
    [{}, {"KmsKeyArn": KMS_KEY, "BucketOwnerAccountId": "210987654321"}, SPILL],
    ids=["defaults", "kms-and-owner", "spill-volume"],
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
        # moto lists a resource its condition leaves out as an entry without id or type
        types = {
            r["LogicalResourceId"]: r["ResourceType"] for r in resources if "LogicalResourceId" in r
        }
        assert types == created_resources(template, **extra)
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
        for role in ("TaskExecutionRole", "StreamingTaskRole", "BatchTaskRole"):
            role_name = outputs[f"{role}Arn"].rsplit("/", 1)[1]
            assert iam.get_role(RoleName=role_name)["Role"]["Arn"] == outputs[f"{role}Arn"]
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
    finally:
        cloudformation.delete_stack(StackName=name)


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
