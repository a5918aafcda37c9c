"""The runner images' definition: the versions table, Dockerfile, requirements and build.sh agree."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from runner_testlib import REPO

from runner_image import RUNNER_PROTOCOL_VERSION
from runner_image.image_versions import (
    ARCHES,
    DOCKER_DIR,
    DOCKERFILE,
    VERSIONS_FILE,
    VersionsError,
    build_args,
    build_command,
    load_versions,
)
from runner_image.smoke import IMAGE_ARCH_ENV

REQUIREMENTS = DOCKER_DIR / "requirements.txt"
BUILD_SH = DOCKER_DIR / "build.sh"
# Values that vary per build rather than per architecture.
PER_BUILD = {"FORGE_VERSION", "REVISION", "CREATED"}


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pairs(rest: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(rest))


def _dockerfile() -> tuple[dict[str, str], dict[str, str], dict[str, str], list[tuple[str, str]]]:
    ins = _instructions(DOCKERFILE.read_text())
    args = {}
    for word, rest in ins:
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    labels = {k: v for word, rest in ins if word == "LABEL" for k, v in _pairs(rest).items()}
    env = {k: v for word, rest in ins if word == "ENV" for k, v in _pairs(rest).items()}
    return args, labels, env, ins


def _substitute(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], value)


def test_the_table_has_every_architecture_and_validates() -> None:
    table = load_versions()
    assert tuple(table.arch) == ARCHES
    blackwell = table.row("blackwell")
    assert {"10.0", "12.0"} <= set(blackwell.compute_capabilities)
    assert blackwell.torch_index_url.endswith("/cu128")
    assert table.row("cpu").cuda is None and table.row("cpu").bitsandbytes is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # Blackwell on a CUDA 12.6 build: the "no kernels for sm_120" failure this table exists to prevent.
        (
            ('cuda = "12.8"', 'cuda = "12.6"', "cu128", "cu126", "12.8.1-cudnn", "12.6.3-cudnn"),
            "sm_120 needs CUDA >= 12.8 and torch >= 2.7",
        ),
        (('base_image = "nvidia/cuda:12.8.1', 'base_image = "nvidia/cuda:12.6.3'), "base_image is CUDA 12.6"),
        (("cu128", "cu126"), "torch for CUDA 12.8 comes from https://download.pytorch.org/whl/cu128"),
        (("[arch.ada]", "[arch.lovelace]"), "missing ['ada'], unknown ['lovelace']"),
    ],
)
def test_an_inconsistent_table_is_refused_with_the_reason(
    tmp_path: Path, edit: tuple[str, ...], message: str
) -> None:
    text = VERSIONS_FILE.read_text()
    blackwell, rest = text.split("[arch.hopper]")
    for old, new in zip(edit[::2], edit[1::2], strict=True):
        if old.startswith("[arch."):
            rest = rest.replace(old, new)
        else:
            blackwell = blackwell.replace(old, new)
    broken = tmp_path / "versions.toml"
    broken.write_text(blackwell + "[arch.hopper]" + rest)
    with pytest.raises(VersionsError, match=re.escape(message)):
        load_versions(broken)


def test_the_dockerfile_declares_exactly_the_build_args_and_defaults_to_the_cpu_row() -> None:
    table = load_versions()
    args, _, _, _ = _dockerfile()
    cpu = build_args("cpu", table, revision="r", created="c", version="v")
    for arch in ARCHES:
        assert set(build_args(arch, table, revision="r", created="c", version="v")) == set(args)
    for name, value in cpu.items():
        if name not in PER_BUILD:
            assert args[name] == value, f"ARG {name} default must be the cpu row's {value!r}"


@pytest.mark.parametrize("arch", ARCHES)
def test_each_image_is_labelled_with_its_table_row(arch: str) -> None:
    table = load_versions()
    row = table.row(arch)
    _, labels, _, _ = _dockerfile()
    values = build_args(arch, table, revision="abc123", created="2026-01-01T00:00:00Z", version="0.1.0")
    built = {key: _substitute(value, values) for key, value in labels.items()}
    assert built["forge.arch"] == arch
    assert built["forge.cuda"] == (row.cuda or "none")
    assert built["forge.torch"] == row.torch
    assert built["forge.runner-protocol"] == str(RUNNER_PROTOCOL_VERSION)
    assert built["forge.compute-capabilities"] == ";".join(row.compute_capabilities)
    assert built["org.opencontainers.image.base.name"] == row.base_image
    assert built["org.opencontainers.image.revision"] == "abc123"
    assert built["org.opencontainers.image.version"] == "0.1.0"
    assert built["org.opencontainers.image.created"] == "2026-01-01T00:00:00Z"
    assert built["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert built["org.opencontainers.image.title"] == f"forge-runner-{arch}"


def test_the_image_runs_offline_as_a_non_root_user_with_forge_runner_as_entrypoint() -> None:
    _, _, env, ins = _dockerfile()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env[IMAGE_ARCH_ENV] == "${FORGE_ARCH}"  # how smoke knows which image it is in
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [rest for word, rest in ins if word == "ENTRYPOINT"] == ['["forge-runner"]']
    copies = [rest for word, rest in ins if word == "COPY" and not rest.startswith("--from=")]
    # The runner, the model catalog it reads and what the venv is built from; never forged or forgectl.
    sources = [src for rest in copies for src in rest.split()[:-1]]
    assert all(
        src.startswith(("runner_image", "protos/forge/catalog", "protos/forge/__init__")) for src in sources
    ), "the image holds only the runner and the catalog"
    # The finished image is the last stage: it takes the venv and the runner from the build stage and
    # nothing from the context, so no wheel and no build file reaches it.
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    final_copies = [rest for word, rest in ins[last_from:] if word == "COPY"]
    assert final_copies == ["--from=build /opt/venv /opt/venv", "--from=build /opt/forge /opt/forge"]


def _runner_imports() -> set[str]:
    names = set()
    for path in (REPO / "runner_image").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    # runner_image and forge (the model catalog) are first-party: the Dockerfile copies them in.
    first_party = ("runner_image", "forge", "__future__")
    return {n for n in names if n not in sys.stdlib_module_names and n not in first_party}


def test_requirements_pin_what_the_runner_imports_within_pyproject_ranges() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    ranges = {
        canonicalize_name(r.name): r.specifier for r in map(Requirement, pyproject["project"]["dependencies"])
    }
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            [spec] = req.specifier
            assert spec.operator == "==", f"{line}: the image pins exact versions"
            pins[canonicalize_name(req.name)] = spec.version
    for name, version in pins.items():
        assert name in ranges, f"{name} is in requirements.txt but not in pyproject.toml"
        assert ranges[name].contains(version), f"{name}=={version} is outside pyproject's {ranges[name]}"
    for arch in ARCHES:
        assert ranges["torch"].contains(load_versions().row(arch).torch)
    copied = DOCKERFILE.read_text()
    assert "protos/forge/catalog.yaml" in copied, "the runner imports forge.catalog: copy it into the image"
    provided = set(pins) | {"torch"}
    owners = packages_distributions()
    for module in _runner_imports():
        dists = {canonicalize_name(d) for d in owners.get(module, [module])}
        assert dists & provided, f"runner_image imports {module} but the image would not install it"


def test_build_sh_prints_the_exact_docker_build_for_an_arch() -> None:
    proc = subprocess.run(
        ["bash", str(BUILD_SH), "blackwell", "--dry-run"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    expected = build_command("blackwell", load_versions())
    per_build = [i for i, a in enumerate(expected) if a.split("=")[0] in PER_BUILD]
    assert [a for i, a in enumerate(argv) if i not in per_build] == [
        a for i, a in enumerate(expected) if i not in per_build
    ]
    assert (REPO / argv[argv.index("-f") + 1]) == DOCKERFILE
    assert argv[argv.index("-t") + 1] == "forge:blackwell"
    assert "--build-arg" in argv and "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128" in argv


def test_build_sh_refuses_an_unknown_arch_in_one_line() -> None:
    proc = subprocess.run(
        ["bash", str(BUILD_SH), "volta", "--dry-run"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown architecture 'volta': choose one of blackwell, hopper, ada, ampere, cpu"
    )
    assert proc.stdout == ""


def _docker_daemon_up() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _buildkit() -> bool:
    """`docker build --check` is BuildKit's; Debian's docker.io ships the legacy builder without buildx."""
    try:
        return (
            subprocess.run(["docker", "buildx", "version"], capture_output=True, timeout=10).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_daemon_up(), reason="no Docker daemon running")
@pytest.mark.skipif(
    not _buildkit(), reason="docker build --check needs BuildKit (docker buildx), not installed"
)
@pytest.mark.parametrize("arch", ARCHES)
def test_docker_build_check_accepts_the_dockerfile(arch: str) -> None:
    cmd = build_command(arch, load_versions())
    proc = subprocess.run(
        [*cmd[:2], "--check", *cmd[2:]], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
