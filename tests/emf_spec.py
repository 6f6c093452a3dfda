"""A validator of CloudWatch Embedded Metric Format documents, written from the specification
("Specification: Embedded metric format", Amazon CloudWatch User Guide) independently of
``feedvault.emf``, so the tests check the product against the spec and not against itself.

:func:`emf_problems` returns every rule a log line breaks (empty: valid). The rules:

* the line is one JSON object, nothing before or after it;
* root member ``_aws`` is an object with ``Timestamp`` (an integer: ms since the epoch) and
  ``CloudWatchMetrics`` (an array of MetricDirective objects);
* a MetricDirective has ``Namespace`` (a string of 1..255 characters), ``Dimensions`` (an array
  of at least one DimensionSet) and ``Metrics`` (an array of at most 100 MetricDefinitions);
* a DimensionSet is an array of at most 30 strings (1..255 characters), each naming a
  top-level member whose value is a string;
* a MetricDefinition has ``Name`` (1..255 characters) naming a top-level member whose value is
  a number, or an array of 1..100 numbers (booleans are not numbers); an optional ``Unit``
  among CloudWatch's units; an optional ``StorageResolution`` of 1 or 60; nothing else.
"""

from __future__ import annotations

import json
import math
from typing import Any

# The units of the specification's MetricDefinition, as it lists them.
_UNITS = (
    "Seconds Microseconds Milliseconds Bytes Kilobytes Megabytes Gigabytes Terabytes Bits "
    "Kilobits Megabits Gigabits Terabits Percent Count Bytes/Second Kilobytes/Second "
    "Megabytes/Second Gigabytes/Second Terabytes/Second Bits/Second Kilobits/Second "
    "Megabits/Second Gigabits/Second Terabits/Second Count/Second None"
)
CLOUDWATCH_UNITS = set(_UNITS.split())


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_name(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 255


def _directive_problems(root: dict[str, Any], directive: object, at: str) -> list[str]:
    if not isinstance(directive, dict):
        return [f"{at} is not an object"]
    problems: list[str] = []
    if not _is_name(directive.get("Namespace")):
        problems.append(f"{at}.Namespace is not a string of 1..255 characters")
    dimensions = directive.get("Dimensions")
    if not isinstance(dimensions, list) or not dimensions:
        problems.append(f"{at}.Dimensions is not a non-empty array")
        dimensions = []
    for i, dimension_set in enumerate(dimensions):
        where = f"{at}.Dimensions[{i}]"
        if not isinstance(dimension_set, list):
            problems.append(f"{where} is not an array")
            continue
        if len(dimension_set) > 30:
            problems.append(f"{where} has {len(dimension_set)} dimensions (at most 30)")
        for key in dimension_set:
            if not _is_name(key):
                problems.append(f"{where}: {key!r} is not a name of 1..255 characters")
            elif not isinstance(root.get(key), str):
                problems.append(f"{where}: dimension {key!r} is not a top-level string member")
    metrics = directive.get("Metrics")
    if not isinstance(metrics, list):
        return [*problems, f"{at}.Metrics is not an array"]
    if len(metrics) > 100:
        problems.append(f"{at}.Metrics has {len(metrics)} definitions (at most 100)")
    for i, definition in enumerate(metrics):
        where = f"{at}.Metrics[{i}]"
        if not isinstance(definition, dict):
            problems.append(f"{where} is not an object")
            continue
        extra = set(definition) - {"Name", "Unit", "StorageResolution"}
        if extra:
            problems.append(f"{where} has members the spec does not define: {sorted(extra)}")
        name = definition.get("Name")
        if not _is_name(name):
            problems.append(f"{where}.Name is not a string of 1..255 characters")
        else:
            value = root.get(name)
            if isinstance(value, list):
                if not 1 <= len(value) <= 100 or not all(_is_number(v) for v in value):
                    problems.append(f"metric {name!r} is not an array of 1..100 numbers")
            elif not _is_number(value):
                problems.append(f"metric {name!r} is not a top-level numeric member")
        if "Unit" in definition and definition["Unit"] not in CLOUDWATCH_UNITS:
            problems.append(f"{where}.Unit {definition['Unit']!r} is not a CloudWatch unit")
        if "StorageResolution" in definition and definition["StorageResolution"] not in (1, 60):
            problems.append(f"{where}.StorageResolution is not 1 or 60")
    return problems


def emf_problems(line: str) -> list[str]:
    """Every rule of the specification ``line`` breaks; ``[]`` when it is a valid document."""
    try:
        root = json.loads(line)
    except ValueError as exc:
        return [f"not one JSON value: {exc}"]
    if not isinstance(root, dict):
        return ["the root is not a JSON object"]
    meta = root.get("_aws")
    if not isinstance(meta, dict):
        return ["no _aws object"]
    problems: list[str] = []
    timestamp = meta.get("Timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        problems.append("_aws.Timestamp is not an integer of milliseconds")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return [*problems, "_aws.CloudWatchMetrics is not an array"]
    for i, directive in enumerate(directives):
        problems += _directive_problems(root, directive, f"CloudWatchMetrics[{i}]")
    return problems


def assert_valid_emf(line: str) -> dict[str, Any]:
    """Fail with every problem unless ``line`` is a valid EMF document; return it parsed."""
    problems = emf_problems(line)
    assert not problems, f"invalid EMF document ({'; '.join(problems)}): {line}"
    document: dict[str, Any] = json.loads(line)
    return document
