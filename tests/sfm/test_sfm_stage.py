"""The SfM stage end to end on synthetic flights, through the stage runner (as `spaceport stage sfm` runs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from spaceport.contract import BadInputError
from spaceport.stages.runner import run_stage
from spaceport.stages.sfm import focal
from spaceport.storage import S3Store, s3_client
from spaceport.synthetic import Flight, enu_to_geodetic, generate_flight, geodetic_to_enu
from tests.s3 import moto_s3, s3_environment
from tests.sfm.geometry import alignment_error, model_centres


@pytest.fixture(scope="module")
def gps_flight(tmp_path_factory: pytest.TempPathFactory) -> Flight:
    # 24 photos at 400x300: with 16 at 320x240 about one COLMAP run in three converged 10-20% off (its
    # matching and mapping are not repeatable run to run); this flight came out right 6 times in 6.
    return generate_flight(tmp_path_factory.mktemp("gps") / "photos", n_images=24, width=400, height=300, seed=3)


def _original_name(name: str) -> str:
    return name.split("/")[-1].replace(".JPG", ".jpg")


def _georeferenced_error(out: Path, flight: Flight) -> float:
    """Largest distance between a camera placed through georef.json and the truth, over the flight's extent."""
    georef = json.loads((out / "georef.json").read_text())
    origin = (georef["latitude"], georef["longitude"], georef["altitude"])
    centres = {_original_name(n): c for n, c in model_centres(out / "sparse").items()}
    names = sorted(centres)
    lat, lon, alt = enu_to_geodetic(np.array([centres[n] for n in names]), origin)
    placed = geodetic_to_enu(lat, lon, alt, flight.origin)
    truth = dict(zip(flight.image_names, flight.camera_centers, strict=True))
    return float(np.linalg.norm(placed - np.array([truth[n] for n in names]), axis=1).max() / flight.extent)


def test_gps_flight_registers_at_metric_scale(gps_flight: Flight, tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "in"
    # A messy upload: nested folders, upper-case suffixes, a corrupt JPEG and a stray text file.
    shutil.copytree(gps_flight.out_dir, photos / "day1")
    for name in gps_flight.image_names[::3]:
        (photos / "day1" / name).rename(photos / "day1" / name.replace(".jpg", ".JPG"))
    (photos / "day1" / "IMG_9999.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("flown at noon")
    out = tmp_path / "out"
    seen = []
    result = run_stage("sfm", str(photos), str(out), {"maxImageSize": 400}, listener=seen.append)

    m = result.metrics
    assert (m["imagesFound"], m["imagesUsed"], m["registeredImages"]) == (25, 24, 24)
    assert m["matchingMode"] == "spatial" and m["components"] == 1 and m["cameras"] == 1
    assert m["meanReprojectionError"] < 1.0 and m["points3D"] > 300 and m["meanTrackLength"] > 2.5
    assert set(m["durations"]) == {"prepare", "features", "matching", "mapping", "undistortion", "upload"}
    assert result.typed_metrics().unknown == [], "every metric the stage reports has a field in SfmMetrics"
    assert any("IMG_9999.jpg" in w for w in result.warnings)
    assert any("registered" in r.message for r in seen) and seen[-1].fraction == 1.0
    # COLMAP's per-image alignment warning about priors without covariance (ours have none on purpose)
    assert "valid covariance" not in capfd.readouterr().err

    centres = model_centres(out / "sparse")
    names = [f"day1/{n.replace('.jpg', '.JPG') if i % 3 == 0 else n}" for i, n in enumerate(gps_flight.image_names)]
    assert sorted(centres) == sorted(names)
    assert json.loads((out / "photos.json").read_text()) == sorted(names)  # held-out photos are chosen from it
    renamed = {_original_name(n): c for n, c in centres.items()}
    scale, err = alignment_error(renamed, gps_flight)
    assert err < 0.01
    assert scale == pytest.approx(1.0, abs=0.02)  # metric straight from GPS: nothing rescaled here
    assert _georeferenced_error(out, gps_flight) < 0.01
    assert m["georeference"] == json.loads((out / "georef.json").read_text())

    rec = pycolmap.Reconstruction(str(out / "sparse"))
    assert {c.model.name for c in rec.cameras.values()} == {"PINHOLE"}
    # every photo has an EXIF focal length, so mapping kept it: exact here, as the flight's EXIF is
    assert m["focalLength"] == "exif"
    assert [c.params[0] for c in rec.cameras.values()] == [pytest.approx(gps_flight.fx, rel=1e-6)]
    for image in rec.images.values():
        assert Image.open(out / "images" / image.name).size == (image.camera.width, image.camera.height)
    assert result.outputs["sparse"].endswith("sparse") and result.outputs["georef"].endswith("georef.json")


def test_orbit_without_gps_matches_every_pair(tmp_path: Path) -> None:
    flight = generate_flight(tmp_path / "photos", n_images=12, width=320, height=240, seed=4, path="orbit", gps=False)
    result = run_stage("sfm", str(flight.out_dir), str(tmp_path / "out"))
    assert result.metrics["matchingMode"] == "exhaustive"
    assert result.metrics["registeredImages"] == 12 and result.metrics["georeference"] is None
    assert not (tmp_path / "out" / "georef.json").exists()
    _, err = alignment_error(model_centres(tmp_path / "out" / "sparse"), flight)
    assert err < 0.01


def test_s3_in_and_out(gps_flight: Flight, tmp_path: Path) -> None:
    with moto_s3() as endpoint, s3_environment(endpoint):
        s3_client().create_bucket(Bucket="drone")
        S3Store("s3://drone/uploads/site-a").upload_dir(gps_flight.out_dir)
        result = run_stage("sfm", "s3://drone/uploads/site-a", "s3://drone/runs/1/sfm",
                           {"maxImageSize": 400})
        out = S3Store("s3://drone/runs/1/sfm")
        keys = out.list()
        model = {"sparse/cameras.bin", "sparse/images.bin", "sparse/points3D.bin"}
        assert {"georef.json", "result.json", *model} <= set(keys)
        out.download_dir("", tmp_path / "out")
    assert result.metrics["registeredImages"] == 24
    assert sum(k.startswith("images/") for k in keys) == 24
    scale, err = alignment_error(model_centres(tmp_path / "out" / "sparse"), gps_flight)
    assert err < 0.01 and scale == pytest.approx(1.0, abs=0.02)
    assert _georeferenced_error(tmp_path / "out", gps_flight) < 0.01


def test_global_mapper_on_an_orbit_lands_on_gps(tmp_path: Path) -> None:
    flight = generate_flight(tmp_path / "photos", n_images=12, width=320, height=240, seed=4, path="orbit")
    result = run_stage("sfm", str(flight.out_dir), str(tmp_path / "out"), {"mapper": "global"})
    assert result.metrics["mapper"] == "global" and result.metrics["registeredImages"] == 12
    assert result.metrics["gpsResidualMeters"] < 0.05 * flight.extent
    scale, err = alignment_error(model_centres(tmp_path / "out" / "sparse"), flight)
    assert err < 0.01 and scale == pytest.approx(1.0, abs=0.02)
    assert _georeferenced_error(tmp_path / "out", flight) < 0.01


def test_disconnected_sites_keep_the_largest(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    big = generate_flight(photos, n_images=10, width=320, height=240, seed=5, name_format="A_{:03d}.jpg")
    # A second site 2 km away, never overlapping the first.
    generate_flight(photos, n_images=6, width=320, height=240, seed=6, name_format="B_{:03d}.jpg",
                    origin=(47.3949, 8.5417, 420.0))
    result = run_stage("sfm", str(photos), str(tmp_path / "out"))
    assert result.metrics["registeredImages"] == 10 and result.metrics["components"] == 2
    assert any("2 disconnected components" in w and "dropped 6" in w for w in result.warnings)
    assert sorted(model_centres(tmp_path / "out" / "sparse")) == big.image_names


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "flight.log").write_text("nothing here")
    with pytest.raises(BadInputError, match="no images found under") as e:
        run_stage("sfm", str(tmp_path / "in"), str(tmp_path / "out"))
    assert e.value.exit_code == 2


def test_too_few_usable_images(gps_flight: Flight, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for name in gps_flight.image_names[:2]:
        shutil.copy(gps_flight.out_dir / name, tmp_path / "in" / name)
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(BadInputError, match=r"only 2 usable images .*3 found, 1 unreadable: bad\.png: "):
        run_stage("sfm", str(tmp_path / "in"), str(tmp_path / "out"))


def test_unrelated_photos_fail_with_the_numbers(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(5):
        # Smooth random blobs: plenty of SIFT features, no two photos of the same place.
        small = rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC).save(tmp_path / "in" / f"p{i}.png")
    with pytest.raises(BadInputError, match=r"only 0 of 5 usable images registered .*minRegisteredFraction is 0.5"):
        run_stage("sfm", str(tmp_path / "in"), str(tmp_path / "out"))


def test_each_camera_model_gets_its_own_intrinsics(gps_flight: Flight, tmp_path: Path) -> None:
    photos = tmp_path / "in"
    shutil.copytree(gps_flight.out_dir, photos)
    for name in gps_flight.image_names[1::2]:
        im = Image.open(photos / name)
        exif = im.getexif()
        exif[0x0110] = "Another camera"
        im.save(photos / name, "JPEG", quality=95, exif=exif)
    result = run_stage("sfm", str(photos), str(tmp_path / "out"))
    assert result.metrics["cameras"] == 2 and result.metrics["registeredImages"] == 24
    rec = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse"))
    by_camera: dict[int, set[str]] = {}
    for image in rec.images.values():
        by_camera.setdefault(image.camera_id, set()).add(image.name)
    assert sorted(sorted(names) for names in by_camera.values()) == [
        gps_flight.image_names[0::2], gps_flight.image_names[1::2]]
    # each camera's focal length from its own EXIF 35 mm equivalent (COLMAP's default guess: ~70% off)
    for camera in rec.cameras.values():
        assert camera.params[0] == pytest.approx(gps_flight.fx, rel=1e-6)


def test_refine_focal_length_estimates_it_from_the_exif_start(gps_flight: Flight, tmp_path: Path) -> None:
    # the incremental mapper: over flat ground the global one's refined focal length drifts far (focal.py)
    result = run_stage("sfm", str(gps_flight.out_dir), str(tmp_path / "out"),
                       {"focalLength": "refine", "mapper": "incremental"})
    assert result.metrics["focalLength"] == "refined" and result.metrics["registeredImages"] == 24
    (camera,) = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse")).cameras.values()
    # bundle adjustment moved it off the EXIF value, and not far: over this flat ground it drifts with
    # the depth (seen 4.5% off with 8 images a camera; the demo flight's 40 came out 0.8-1.7% long)
    assert camera.params[0] != pytest.approx(gps_flight.fx, rel=1e-4)
    assert camera.params[0] == pytest.approx(gps_flight.fx, rel=0.07)
    # a drift past 5% from the EXIF value is reported, naming the camera by an image and the numbers
    rec = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse"))
    names = sorted(im.name for im in rec.images.values())
    exact = focal.focal_drift(rec, dict.fromkeys(names, camera.params[0]))
    (note,) = focal.focal_drift(rec, dict.fromkeys(names, camera.params[0] / 1.2))
    assert exact == []
    assert f"{names[0]}'s camera (24 images)" in note and "+20% off its EXIF value" in note
    # and the stage said so exactly when this run drifted that far
    drifted = abs(camera.params[0] / gps_flight.fx - 1) > focal.FOCAL_DRIFT_WARN
    assert any("off its EXIF value" in w for w in result.warnings) == drifted


def test_mixed_frames_and_missing_exif_each_get_their_own_camera(gps_flight: Flight, tmp_path: Path) -> None:
    """A folder as users upload it: most photos straight from the drone, some cropped, some turned upright
    (portrait), some exported without any EXIF. Each kind of frame gets its own intrinsics and registers."""
    photos = tmp_path / "in"
    shutil.copytree(gps_flight.out_dir, photos)
    names = gps_flight.image_names
    groups = {"crop": names[1:8:3], "portrait": names[2:9:3], "bare": names[3:10:3]}
    for name in groups["crop"]:
        im = Image.open(photos / name)
        im.crop((50, 0, 350, 300)).save(photos / name, "JPEG", quality=95, exif=im.getexif())
    for name in groups["portrait"]:
        im = Image.open(photos / name)
        im.transpose(Image.Transpose.ROTATE_90).save(photos / name, "JPEG", quality=95, exif=im.getexif())
    for name in groups["bare"]:
        Image.open(photos / name).save(photos / name, "JPEG", quality=95)  # no exif= : the tags are gone
    result = run_stage("sfm", str(photos), str(tmp_path / "out"), {"maxImageSize": 400})
    m = result.metrics
    assert m["registeredImages"] == 24 and m["cameras"] == 4 and m["gpsImages"] == 21
    # a photo without a focal length among the others: nothing to hold, so every camera is estimated
    assert m["focalLength"] == "estimated"
    rec = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse"))
    camera_of = {im.name: im.camera_id for im in rec.images.values()}
    ids = {kind: {camera_of[n] for n in members} for kind, members in groups.items()}
    plain = {camera_of[n] for n in names if not any(n in g for g in groups.values())}
    assert all(len(s) == 1 for s in [*ids.values(), plain]) and len({*plain, *set().union(*ids.values())}) == 4
    # (undistortion trims a pixel or two off each side)
    sizes = {kind: (rec.cameras[next(iter(s))].width, rec.cameras[next(iter(s))].height) for kind, s in ids.items()}
    for kind, size in {"crop": (300, 300), "portrait": (300, 400), "bare": (400, 300)}.items():
        assert sizes[kind] == pytest.approx(size, abs=3)
    # the same lens in the crop and the upright frames: focal lengths close to the drone's own
    main = rec.cameras[next(iter(plain))].mean_focal_length()
    for kind in ("crop", "portrait"):
        assert rec.cameras[next(iter(ids[kind]))].mean_focal_length() == pytest.approx(main, rel=0.1)


def test_noisy_and_wrong_gps_tags_neither_break_nor_bend_the_model(tmp_path: Path) -> None:
    """Consumer GPS: metres of noise on every tag, and two tags ~110 m off (a receiver's glitch). Registration
    and the model's shape come from the photos; the wrong tags are named."""
    flight = generate_flight(tmp_path / "photos", n_images=24, width=400, height=300, seed=3, gps_noise_m=2.0)
    wrong = flight.image_names[5], flight.image_names[17]
    for name in wrong:
        im = Image.open(flight.out_dir / name)
        exif = im.getexif()
        gps = exif.get_ifd(0x8825)
        d, m, s = gps[2]
        gps[2] = (d, m, float(s) + 3.6)  # 3.6 arc seconds of latitude: ~111 m north
        im.save(flight.out_dir / name, "JPEG", quality=95, exif=exif)
    result = run_stage("sfm", str(flight.out_dir), str(tmp_path / "out"), {"maxImageSize": 400})
    m = result.metrics
    assert m["registeredImages"] == 24 and m["gpsOutliers"] == 2
    assert any(all(n in w for n in wrong) and "standard deviations" in w for w in result.warnings)
    # the shape comes from the photos: the worst camera within 3% of the flight's extent (2.5% measured; 1% with
    # exact tags), the scale from 22 good tags with metres of noise
    scale, err = alignment_error(model_centres(tmp_path / "out" / "sparse"), flight)
    assert err < 0.03 and scale == pytest.approx(1.0, abs=0.05)
