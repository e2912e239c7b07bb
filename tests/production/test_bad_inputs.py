"""Bad input, end to end: the operator creates the Jobs, the kubelet stand-in runs the REAL stages against moto
S3 or local volumes, and each mistake ends in phase Failed with a message naming the thing that is wrong.
Nothing that existed before a run is overwritten or deleted.

Wrong credentials are not in this matrix: moto accepts any access key, so a wrong key cannot be told apart
from a right one here. What can be checked is checked: a Secret without keys fails before any Job
(tests/operator/test_queueing.py), and S3's AccessDenied maps to a message naming the credentials Secret
(spaceport.storage).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from spaceport.storage import S3Store
from tests.operator.harness import Cluster
from tests.operator.test_lifecycle import spec_for
from tests.production.kubelet import Kubelet
from tests.production.results import finished

BROKEN_JPEG = b"\xff\xd8\xff\xe0" + b"this is not image data" * 8
"""A JPEG's first bytes and then nothing a decoder can use: a truncated or corrupted upload."""


def noise_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """Unrelated photos: nothing in common for SfM to match."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def s3_objects(cluster: Cluster, buckets: tuple[str, ...]) -> dict[str, bytes]:
    objects = {}
    for bucket in buckets:
        for key in cluster.s3_keys(f"s3://{bucket}/"):
            objects[f"{bucket}/{key}"] = cluster.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return objects


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_kept(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"overwritten or deleted: {changed}"


async def failed(cluster: Cluster, name: str, spec: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    await cluster.create_recon(name, spec)
    return await cluster.wait_status(name, lambda s: s.get("phase") == "Failed", f"{name} Failed", timeout)


async def s3_case(cluster: Cluster, buckets: tuple[str, str], name: str, photos: dict[str, bytes],
                  spec: dict[str, Any] | None = None) -> dict[str, Any]:
    for key, body in photos.items():
        cluster.s3_put(f"s3://{buckets[0]}/{key}", body)
    before = s3_objects(cluster, buckets)
    status = await failed(cluster, name, spec or spec_for(buckets))
    assert_kept(before, s3_objects(cluster, buckets))
    return status


async def test_no_images(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    status = await s3_case(cluster, buckets, "noimg", {"site/notes.txt": b"flight log", "site/raw/a.dng": b"x"})
    assert status["reason"] == "StageFailed" and status["stage"] == "sfm"
    assert status["message"].startswith(f"sfm failed: BadInput: no images found under s3://{buckets[0]}/site ")
    assert len(kubelet.attempts["noimg-r1-sfm"]) == 1  # bad input is never retried


async def test_empty_prefix(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    status = await s3_case(cluster, buckets, "empty", {"elsewhere/IMG_1.jpg": noise_jpegs(1)[0]})
    assert f"no images found under s3://{buckets[0]}/site " in status["message"]


async def test_missing_input_bucket(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    spec = spec_for(buckets)
    spec["input"]["uri"] = f"s3://missing-{buckets[0]}/site"
    status = await s3_case(cluster, buckets, "nobucket", {}, spec)
    assert f"bucket 'missing-{buckets[0]}' does not exist" in status["message"]


async def test_missing_output_bucket(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    spec = spec_for(buckets)
    spec["output"]["uri"] = f"s3://missing-{buckets[1]}/results"
    status = await s3_case(cluster, buckets, "nooutbucket", {"site/a.jpg": noise_jpegs(1)[0]}, spec)
    assert f"output: bucket 'missing-{buckets[1]}' does not exist" in status["message"]
    assert len(kubelet.attempts["nooutbucket-r1-sfm"]) == 1  # permanent: checked before any work, never retried


async def test_corrupt_jpeg_leaving_too_few(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    a, b = noise_jpegs(2)
    status = await s3_case(cluster, buckets, "corrupt", {"site/a.jpg": a, "site/b.jpg": b, "site/c.jpg": BROKEN_JPEG})
    assert f"only 2 usable images under s3://{buckets[0]}/site (3 found, 1 unreadable: c.jpg: " in status["message"]


async def test_too_few_registered(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    photos = {f"site/IMG_{i}.jpg": body for i, body in enumerate(noise_jpegs(4, seed=1))}
    status = await s3_case(cluster, buckets, "unrelated", photos)
    assert "only 0 of 4 usable images registered" in status["message"]
    assert "sfm.minRegisteredFraction" in status["message"]


async def test_ply_missing_fields(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    """Earlier stages already done (their result.json kept, so the real stages skip them); compress meets a PLY
    with positions only. The run starts suspended, so those results land in the run folder it picked before any
    stage runs (the operator never reuses a run folder that already holds files)."""
    run = f"s3://{buckets[1]}/site/runs/1"
    photos = {"site/a.jpg": noise_jpegs(1)[0]}
    cluster.s3_put(f"s3://{buckets[0]}/site/a.jpg", photos["site/a.jpg"])
    spec = spec_for(buckets)
    await cluster.create_recon("site", {**spec, "suspend": True})
    await cluster.wait_status("site", lambda s: s.get("phase") == "Suspended", "Suspended")
    cluster.s3_put(f"{run}/sfm/result.json", finished("sfm", {"imagesUsed": 3}, spec,
                                                      S3Store(f"s3://{buckets[0]}/site", cluster.s3)))
    cluster.s3_put(f"{run}/train/result.json", finished("train", {"gaussians": 2}, spec,
                                                        S3Store(f"{run}/sfm", cluster.s3)))
    positions_only = (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\n"
                      b"property float y\nproperty float z\nend_header\n" + np.zeros(6, "<f4").tobytes())
    cluster.s3_put(f"{run}/train/splats.ply", positions_only)
    before = s3_objects(cluster, buckets)
    await cluster.patch_spec("site", {"suspend": False})
    status = await cluster.wait_status("site", lambda s: s.get("phase") == "Failed", "Failed", 60)
    assert_kept(before, s3_objects(cluster, buckets))
    assert status["stage"] == "compress" and status["stages"]["train"]["phase"] == "Succeeded", status["message"]
    assert f"{run}/train/splats.ply: not a 3DGS scene, missing vertex field(s) f_dc_0" in status["message"]


async def test_output_inside_input(cluster: Cluster, kubelet: Kubelet, buckets: tuple[str, str]) -> None:
    spec = spec_for(buckets)
    spec["output"]["uri"] = f"s3://{buckets[0]}/site/results"
    status = await s3_case(cluster, buckets, "nested", {"site/a.jpg": noise_jpegs(1)[0]}, spec)
    assert status["reason"] == "InvalidSpec"
    assert f"output.uri 's3://{buckets[0]}/site/results' lies inside input.uri" in status["message"]
    assert not await cluster.jobs() and not kubelet.attempts


def pvc_spec(**extra: Any) -> dict[str, Any]:
    return {"input": {"uri": "flights/orbit", "volumeClaim": "survey-photos"},
            "output": {"uri": "reconstructions/orbit", "volumeClaim": "survey-results"}, **extra}


@pytest.fixture(scope="module")
def orbit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spaceport.synthetic import generate_flight

    flight = generate_flight(tmp_path_factory.mktemp("orbit") / "photos", n_images=12, width=320, height=240,
                             seed=4, path="orbit", gps=False)
    return Path(flight.out_dir)


async def test_unwritable_output(cluster: Cluster, kubelet: Kubelet, volumes: dict[str, Path], orbit: Path) -> None:
    shutil.copytree(orbit, volumes["survey-photos"] / "flights" / "orbit")
    results = volumes["survey-results"] / "reconstructions" / "orbit"
    results.mkdir(parents=True)
    (results / "runs").write_text("a file where the run folders should go\n")
    before = {**files(volumes["survey-photos"]), **files(volumes["survey-results"])}
    status = await failed(cluster, "orbit", pvc_spec(retries=0), timeout=90)
    assert status["stage"] == "sfm"
    assert "cannot write under " in status["message"] and "reconstructions/orbit/runs/1/sfm" in status["message"]
    assert "Not a directory" in status["message"]
    assert_kept(before, {**files(volumes["survey-photos"]), **files(volumes["survey-results"])})


def sfm_phase(status: dict[str, Any]) -> str | None:
    return status.get("stages", {}).get("sfm", {}).get("phase")


async def test_corrupt_jpeg_is_skipped_and_named(cluster: Cluster, kubelet: Kubelet, volumes: dict[str, Path],
                                                 orbit: Path) -> None:
    photos = volumes["survey-photos"] / "flights" / "orbit"
    shutil.copytree(orbit, photos)
    (photos / "IMG_0099.jpg").write_bytes(BROKEN_JPEG)
    await cluster.create_recon("orbit", pvc_spec())
    status = await cluster.wait_status("orbit", lambda s: sfm_phase(s) in ("Succeeded", "Failed"), "sfm finished", 90)
    sfm = status["stages"]["sfm"]
    assert sfm["phase"] == "Succeeded", status["message"]
    assert sfm["metrics"]["imagesFound"] == 13 and sfm["metrics"]["imagesUsed"] == 12
    assert [w for w in sfm["warnings"] if w.startswith("skipped ") and w.split(":")[0].endswith("IMG_0099.jpg")]
    assert (photos / "IMG_0099.jpg").read_bytes() == BROKEN_JPEG
    assert json.loads((volumes["survey-results"] / "reconstructions/orbit/runs/1/sfm/result.json").read_text())


async def test_second_reconstruction_on_a_volume_prefix_is_output_in_use(cluster: Cluster, kubelet: Kubelet,
                                                                       volumes: dict[str, Path]) -> None:
    """The operator cannot read volumes: the REAL stage checks the owner record there, before any work."""
    first = await failed(cluster, "orbit", pvc_spec(retries=0))  # no photos: it fails, but it owns the prefix
    assert "no images found" in first["message"]
    owner = json.loads((volumes["survey-results"] / "reconstructions" / "orbit" / "owner.json").read_text())
    assert (owner["namespace"], owner["name"]) == ("default", "orbit")
    before = files(volumes["survey-results"])
    second = await failed(cluster, "copy", pvc_spec(retries=0))
    assert second["reason"] == "OutputInUse" and second["stage"] == "sfm"
    assert "belongs to Reconstruction default/orbit" in second["message"]
    assert files(volumes["survey-results"]) == before  # it wrote nothing there
    assert len(kubelet.attempts["copy-r1-sfm"]) == 1  # bad input: never retried
