"""kubectl 1.32 against the emulator: apply the example manifest, list it with the CRD's printer columns."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from tests.operator.harness import ROOT, Cluster
from tests.s3 import S3_ENV

KUBECTL = shutil.which("kubectl")
EXAMPLE = str(ROOT / "examples" / "reconstruction.yaml")


async def kubectl(cluster: Cluster, tmp_path: Path, *args: str, ok: bool = True) -> str:
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: emulator, cluster: {{server: "{cluster.url}"}}}}]
users: [{{name: tester, user: {{token: unused}}}}]
contexts: [{{name: emulator, context: {{cluster: emulator, user: tester, namespace: default}}}}]
current-context: emulator
""")
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(KUBECTL or "kubectl", *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if not ok:
        assert proc.returncode != 0, out.decode()
        return err.decode()
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
    assert not err.strip(), err.decode()  # no warnings either (e.g. ambiguous short names)
    return out.decode()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_kubectl_apply_and_get_shows_printer_columns(cluster: Cluster, tmp_path: Path) -> None:
    await cluster.create_secret("spaceport-s3", S3_ENV)  # the example's Secret, as its README says to create
    # Validation on (kubectl's default): kubectl leaves it to the server, which checks the CRD schema.
    out = await kubectl(cluster, tmp_path, "apply", "-f", EXAMPLE)
    assert out.strip() == "reconstruction.spaceport.dev/quarry-survey created"
    await cluster.wait_job("quarry-survey-r1-sfm")
    await cluster.wait_status("quarry-survey", lambda s: s.get("phase") == "Running", "Running")

    lines = (await kubectl(cluster, tmp_path, "get", "recon")).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "STAGE", "PROGRESS", "RATIO", "PSNR", "AGE"]
    assert lines[1].split()[:4] == ["quarry-survey", "Running", "sfm", "0"]

    out = await kubectl(cluster, tmp_path, "apply", "--validate=false", "-f", EXAMPLE)
    assert out.strip() == "reconstruction.spaceport.dev/quarry-survey unchanged"

    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(EXAMPLE).read_text().replace("name: quarry-survey", "name: bad")
                   .replace("iterations: 7000", "iterations: 0\n    colour: red"))
    err = await kubectl(cluster, tmp_path, "apply", "-f", str(bad), ok=False)
    assert ".spec.train.colour: field not declared in schema" in err
