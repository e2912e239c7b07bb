"""tests/e2e/kind.sh can't run here (no Docker engine): check it statically and test each piece it uses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import kubernetes_validate
import pytest
import yaml

from spaceport.api import ReconstructionSpec
from spaceport.controller.settings import OperatorSettings
from tests.chart.chartlib import KUBE_VERSIONS, operator_container, plain_env, render
from tests.s3 import moto_s3, s3_environment

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "e2e"
SCRIPT = HERE / "kind.sh"
TEXT = SCRIPT.read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).with_name(name))
    assert Path(found).exists(), f"{name} missing: install the dev extra"
    return found


def test_bash_parses_it() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean() -> None:
    result = subprocess.run([_tool("shellcheck"), "-x", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_every_path_it_names_exists() -> None:
    here_files = re.findall(r"\$HERE/([\w./-]+)", TEXT)
    repo_paths = re.findall(r"(?<![\w/$])((?:charts|examples|images|tests)/[\w./-]+)", TEXT)
    assert {"s3.yaml", "seed-job.yaml", "seed_photos.py", "values-kind.yaml", "overlay"} <= set(here_files)
    for rel in here_files:
        assert (HERE / rel.rstrip("/")).exists(), f"kind.sh names $HERE/{rel}, which does not exist"
    for rel in repo_paths:
        assert (ROOT / rel.rstrip("/")).exists(), f"kind.sh names {rel}, which does not exist"


def test_make_targets_and_build_args_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^e2e:\n\tbash tests/e2e/kind\.sh$", makefile, re.M), "make e2e must run this script"
    for target in re.findall(r"\bmake (\w+)", TEXT):
        assert re.search(rf"^{target}:", makefile, re.M), f"kind.sh calls `make {target}`, which Makefile lacks"
    for variable in re.findall(r"\b([A-Z_]+)=\"", TEXT.split("make images", 1)[1].split("\n\n", 1)[0]):
        assert re.search(rf"^{variable} \?=", makefile, re.M), f"make images has no {variable}"
    dockerfile = (ROOT / "images" / "stage.Dockerfile").read_text()
    for arg in re.findall(r"--build-arg (\w+)=", TEXT):
        assert re.search(rf"^ARG {arg}\b", dockerfile, re.M), f"stage.Dockerfile declares no ARG {arg}"


def test_kind_values_render_valid_manifests_without_gpus() -> None:
    values = yaml.safe_load((HERE / "values-kind.yaml").read_text())
    sets = dict(re.findall(r"--set ([\w.]+)=(\S+)", TEXT))
    for dotted, value in sets.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    docs = render(values)
    for doc in docs:
        if not doc["apiVersion"].startswith("kopf.dev/"):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
    container = operator_container(docs)
    assert container["image"] == "spaceport-operator:e2e" and "spaceport-operator:e2e" in TEXT
    settings = OperatorSettings.from_env(plain_env(container))
    assert settings.stage_image == "spaceport-stage:e2e"
    for stage in ("sfm", "train", "compress"):
        assert not any("gpu" in k for k in settings.resources_for(stage).get("limits", {})), stage


@pytest.mark.parametrize("name", ["seed-job.yaml", "s3.yaml"])
def test_its_manifests_validate(name: str) -> None:
    for doc in yaml.safe_load_all((HERE / name).read_text()):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_seed_job_meets_the_restricted_pod_security_standard() -> None:
    job = yaml.safe_load((HERE / "seed-job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "spaceport-stage:e2e"
    assert container["command"][1] == "/seed/seed_photos.py"


def test_s3_server_is_the_dev_extras_moto() -> None:
    [deployment, _] = yaml.safe_load_all((HERE / "s3.yaml").read_text())
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    pinned = next(d for d in PYPROJECT["project"]["optional-dependencies"]["dev"] if d.startswith("moto"))
    assert image.rsplit(":", 1)[1] == pinned.split("==")[1]


def test_overlay_makes_the_example_fit_kind() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("needs kubectl (kustomize built in)")
    result = subprocess.run([kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(HERE / "overlay")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [manifest] = [d for d in yaml.safe_load_all(result.stdout) if d]
    from spaceport.crd import crd_json_schema

    jsonschema.validate(manifest, crd_json_schema())
    spec = ReconstructionSpec.model_validate(manifest["spec"])
    assert manifest["metadata"]["namespace"] == "spaceport-e2e" and manifest["metadata"]["name"] in TEXT
    assert spec.train.device == "cpu"
    assert spec.train.scheduling.resources is not None
    assert "nvidia.com/gpu" not in spec.train.scheduling.resources.limits
    seed = yaml.safe_load((HERE / "seed-job.yaml").read_text())["spec"]["template"]["spec"]["containers"][0]
    assert seed["args"][seed["args"].index("--photos") + 1] == spec.input.uri
    assert spec.output.uri.split("/")[2] in seed["args"], "the seed Job must create the output bucket"


def test_seed_photos_fills_a_real_s3_endpoint() -> None:
    from tests.e2e.seed_photos import main

    with moto_s3() as endpoint, s3_environment(endpoint):
        assert main(["--photos", "s3://drone-photos/quarry/2026-11-20/", "--create-bucket", "spaceport-results"]) == 0
        client: Any = boto3.client("s3", endpoint_url=endpoint)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="drone-photos")["Contents"]]
        assert len([k for k in keys if k.endswith(".jpg")]) == 16
        assert all(k.startswith("quarry/2026-11-20/") for k in keys)
        client.head_bucket(Bucket="spaceport-results")
