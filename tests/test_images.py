"""The Dockerfiles in images/, checked by parsing them (no docker daemon in CI).

A small Dockerfile parser (instructions, continuation lines, comments,
stages, ARG defaults) and one function, :func:`problems`, that lists what is
wrong with a Dockerfile: a base image that is not pinned to an exact version
(or is ``latest``), a final stage that runs as root, the package not built
from the repository and installed from that wheel, ``pip install`` keeping a
cache, or a secret-looking ENV/ARG. Every Dockerfile must have none, and
each rule is shown to catch a bad example.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    args: str
    line: int  # where it starts (1-based)


@dataclass
class Stage:
    image: str  # as written after FROM, ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped
    (also inside a continued instruction, as Docker does)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    if pending:
        raise ValueError(f"line {start}: a continued instruction never ends")
    return instructions


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def stages(instructions: list[Instruction]) -> list[Stage]:
    """The build stages; FROM lines get the defaults of the ARGs declared before the first FROM."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "ARG" and not result:
            name, _, default = ins.args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--platform")]
            image = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(image, name))
        elif result:
            result[-1].instructions.append(ins)
        else:
            raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
    return result


# An exact version: at least major.minor.patch somewhere in the tag (2.18.0-gpu, 3.11.11-slim-bookworm).
EXACT_TAG = re.compile(r"^[\w][\w.-]*$")
VERSION = re.compile(r"\d+\.\d+\.\d+")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"(^|_)(TOKEN|PASSWORD|PASSWD|SECRET|KEY|APIKEY|CREDENTIALS?)(_|$)", re.IGNORECASE)
ROOT_USERS = {"root", "0"}


def image_problem(image: str) -> str | None:
    """Why a base image reference is not pinned (None when it is)."""
    ref, _, digest = image.partition("@")
    if digest and not DIGEST.match(digest):
        return f"{image}: the digest is not sha256:<64 hex>"
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: no tag (that is `latest`)"
    tag = last.rsplit(":", 1)[1]
    if "$" in tag:
        return f"{image}: the tag is a build argument without a default"
    if "latest" in tag.split("-") or not EXACT_TAG.match(tag) or not VERSION.search(tag):
        return f"{image}: the tag {tag!r} is not an exact version (major.minor.patch)"
    return None


def _run_words(ins: Instruction) -> list[str]:
    try:
        return shlex.split(ins.args.replace("&&", " && ").replace(";", " ; "))
    except ValueError:
        return ins.args.split()


def _pip_installs(ins: Instruction) -> list[list[str]]:
    """Each ``pip install ...`` command of a RUN, as words (up to the next && or ;)."""
    words, found = _run_words(ins), []
    for i in range(len(words) - 1):
        if words[i] == "pip" or words[i].endswith("/pip") or (words[i] == "-m" and words[i + 1] == "pip"):
            j = i + 2 if words[i] == "-m" else i + 1
            if j < len(words) and words[j] == "install":
                end = next((k for k in range(j, len(words)) if words[k] in ("&&", ";", "||")), len(words))
                found.append(words[j + 1:end])
    return found


def problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile (empty: nothing)."""
    found: list[str] = []
    all_stages = stages(parse(text))
    if not all_stages:
        return ["no FROM"]
    names: set[str] = set()
    for stage in all_stages:
        if stage.image not in names:
            problem = image_problem(stage.image)
            if problem:
                found.append(f"FROM {problem}")
        if stage.name:
            names.add(stage.name)
        for ins in stage.instructions:
            if ins.keyword in ("ENV", "ARG"):
                for name in re.findall(r"(?:^|\s)([A-Za-z_]\w*)(?==|\s|$)", ins.args):
                    if SECRET_NAME.search(name):
                        found.append(f"line {ins.line}: {ins.keyword} {name} looks like a secret")
            if ins.keyword == "RUN":
                for install in _pip_installs(ins):
                    if "--no-cache-dir" not in install:
                        found.append(f"line {ins.line}: pip install without --no-cache-dir")

    final = all_stages[-1]
    users = [ins.args.split()[0] for ins in final.instructions if ins.keyword == "USER"]
    if not users:
        found.append("the final stage has no USER: it runs as root")
    else:
        user = users[-1].split(":")[0]
        if user in ROOT_USERS:
            found.append(f"the final stage runs as {users[-1]}")
        elif not user.isdigit():
            created = [ins for ins in final.instructions if ins.keyword == "RUN"
                       and re.search(rf"useradd\b[^&;]*--uid\s+([1-9]\d*)\b[^&;]*\s{re.escape(user)}(\s|$)", ins.args)]
            if not created:
                found.append(f"USER {user}: not created in the final stage with useradd --uid <non-zero>")

    # The package: built into a wheel from the repository's sources in a stage...
    builders = [s for s in all_stages[:-1] if s.name and any(
        ins.keyword == "COPY" and re.search(r"(^|\s)(pyproject\.toml|jupyter_kubeai/?)(\s|$)", ins.args)
        for ins in s.instructions) and any(
        ins.keyword == "RUN" and re.search(r"pip wheel\b.*\s\.(\s|$)", ins.args) for ins in s.instructions)]
    if not builders:
        found.append("no stage copies the repository's sources and builds the wheel (pip wheel ... .)")
    # ...and the final stage installs that wheel.
    copied = [ins for ins in final.instructions if ins.keyword == "COPY"
              and any(f"--from={s.name}" in ins.args for s in builders)]
    installs_wheel = any(any(".whl" in word for word in install)
                         for ins in final.instructions if ins.keyword == "RUN" for install in _pip_installs(ins))
    wheel_var = any(ins.keyword == "RUN" and re.search(r"\.whl", ins.args) and _pip_installs(ins)
                    for ins in final.instructions)
    if not copied or not (installs_wheel or wheel_var):
        found.append("the final stage does not COPY --from the wheel stage and pip install the wheel")
    return found


# --------------------------------------------------------------------------
# The Dockerfiles
# --------------------------------------------------------------------------

def test_there_is_an_image_for_the_hub_the_runtime_and_each_single_user_variant():
    assert {path.parent.name for path in DOCKERFILES} >= {
        "hub", "singleuser", "singleuser-pytorch", "singleuser-tensorflow", "serving"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_pinned_non_root_installs_the_repository_and_holds_no_secrets(path):
    assert problems(path.read_text()) == []


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_node_stays_in_the_build_stages(path):
    """The lab extension is built with node in a builder stage; the image itself has none."""
    final = stages(parse(path.read_text()))[-1]
    assert not final.image.startswith("node:")
    assert not any(ins.keyword == "COPY" and "--from=node" in ins.args for ins in final.instructions)
    assert all("nodejs" not in ins.args and "npm " not in ins.args
               for ins in final.instructions if ins.keyword == "RUN")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_build_context_leaves_out_local_environments(path):
    """The context is the repository root; <Dockerfile>.dockerignore (BuildKit) keeps it small and
    makes the builder stage build the lab extension afresh."""
    ignore = (path.parent / "Dockerfile.dockerignore").read_text().split()
    for entry in (".git", ".venv", "node_modules", "jupyter_kubeai/labextension"):
        assert entry in ignore, entry


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copied_source_exists_in_the_repository(path):
    for stage in stages(parse(path.read_text())):
        for ins in stage.instructions:
            if ins.keyword == "COPY" and "--from=" not in ins.args:
                *sources, _ = [w for w in ins.args.split() if not w.startswith("--")]
                for source in sources:
                    assert (ROOT / source).exists(), f"{path}: COPY {source}: not in the repository"


def test_single_user_images_run_as_jovyan_uid_1000_and_start_the_singleuser_server():
    for name in ("singleuser", "singleuser-pytorch", "singleuser-tensorflow"):
        text = (IMAGES / name / "Dockerfile").read_text()
        final = stages(parse(text))[-1]
        assert [i.args for i in final.instructions if i.keyword == "USER"][-1] == "jovyan"
        assert any("useradd --uid 1000 --gid 100" in i.args for i in final.instructions if i.keyword == "RUN")
        assert any("jupyterhub-singleuser" in i.args for i in final.instructions if i.keyword == "CMD")


def test_gpu_variants_start_from_the_framework_images():
    assert stages(parse((IMAGES / "singleuser-pytorch" / "Dockerfile").read_text()))[-1].image.startswith("pytorch/pytorch:")
    tf = stages(parse((IMAGES / "singleuser-tensorflow" / "Dockerfile").read_text()))[-1].image
    assert tf.startswith("tensorflow/tensorflow:") and tf.split("@")[0].endswith("-gpu")


def test_the_hub_image_pins_jupyterhub_and_kubespawner_within_what_pyproject_allows():
    import tomllib

    from packaging.requirements import Requirement

    text = (IMAGES / "hub" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    deps = {Requirement(d).name: Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert args["JUPYTERHUB_VERSION"] in deps["jupyterhub"].specifier
    assert args["KUBESPAWNER_VERSION"] in deps["jupyterhub-kubespawner"].specifier


def test_the_serving_image_runs_the_model_runtime():
    final = stages(parse((IMAGES / "serving" / "Dockerfile").read_text()))[-1]
    [entrypoint] = [i.args for i in final.instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoint == '["python", "-m", "jupyter_kubeai.serving"]'
    assert any("TORCH_VERSION" in i.args for i in final.instructions if i.keyword == "ARG")


def test_the_readme_names_every_image():
    readme = (IMAGES / "README.md").read_text()
    for path in DOCKERFILES:
        assert f"images/{path.parent.name}/Dockerfile" in readme


# --------------------------------------------------------------------------
# The checker catches what it should
# --------------------------------------------------------------------------

GOOD = """\
# syntax=docker/dockerfile:1
FROM python:3.11.11-slim-bookworm AS wheel
COPY pyproject.toml ./
COPY jupyter_kubeai/ jupyter_kubeai/
RUN pip wheel --no-cache-dir --no-deps \\
      --wheel-dir /dist .
FROM python:3.11.11-slim-bookworm@sha256:{digest}
RUN useradd --uid 1000 --gid 100 jovyan
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl
USER jovyan
""".replace("{digest}", "a" * 64)


def test_a_good_dockerfile_passes():
    assert problems(GOOD) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("python:3.11.11-slim-bookworm@", "python:latest@"), "not an exact version"),
        (("FROM python:3.11.11-slim-bookworm AS", "FROM python AS"), "no tag"),
        (("python:3.11.11-slim-bookworm AS", "python:3.11-slim AS"), "not an exact version"),
        (("@sha256:" + "a" * 64, "@sha256:abc"), "digest"),
        (("USER jovyan", "USER root"), "runs as root"),
        (("USER jovyan", "USER 0:0"), "runs as 0:0"),
        (("USER jovyan\n", ""), "has no USER"),
        (("--uid 1000", "--system"), "not created"),
        (("RUN pip install --no-cache-dir", "RUN pip install"), "without --no-cache-dir"),
        (("RUN pip install --no-cache-dir /tmp/dist/*.whl", "RUN pip install --no-cache-dir jupyter_kubeai"),
         "pip install the wheel"),
        (("COPY pyproject.toml ./\nCOPY jupyter_kubeai/ jupyter_kubeai/\n", ""), "builds the wheel"),
        (("USER jovyan", "ENV HUB_API_TOKEN=abc\nUSER jovyan"), "HUB_API_TOKEN looks like a secret"),
        (("USER jovyan", "ARG DB_PASSWORD\nUSER jovyan"), "DB_PASSWORD looks like a secret"),
    ],
)
def test_a_bad_dockerfile_is_caught(change, problem):
    old, new = change
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(problem in p for p in found), found


def test_global_args_give_the_from_line_its_image():
    text = "ARG BASE=python:3.11.11-slim-bookworm\nFROM ${BASE}\nUSER 1000\n"
    assert stages(parse(text))[0].image == "python:3.11.11-slim-bookworm"
    assert image_problem(stages(parse("ARG TAG\nFROM python:${TAG}\n"))[0].image) is not None
