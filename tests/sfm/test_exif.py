"""What EXIF says about the camera: focal-length priors from each kind of tag, GPS accuracy, camera grouping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spaceport.stages.sfm import exif as tags
from spaceport.stages.sfm.inputs import prepare_photo
from spaceport.storage import LocalStore


def _exif(make: str = "", model: str = "", **sub: float) -> Image.Exif:
    exif = Image.Exif()
    if make:
        exif[0x010F], exif[0x0110] = make, model
    codes = {"f35": 0xA405, "f": 0x920A, "plane_x": 0xA20E, "unit": 0xA210, "width": 0xA002}
    ifd = exif.get_ifd(0x8769)
    for name, value in sub.items():
        ifd[codes[name]] = value
    return exif


def test_35mm_equivalent_scales_with_the_diagonal() -> None:
    prior = tags.focal_prior(_exif(f35=24), "", "", (4000, 3000))
    assert prior is not None and prior.source == "35mm"
    assert prior.pixels(4000, 3000) == pytest.approx(24 / 43.267 * 5000)
    assert prior.pixels(800, 600) == pytest.approx(24 / 43.267 * 1000)  # a downscaled copy: same fraction


def test_focal_plane_resolution_for_the_size_the_camera_wrote() -> None:
    # A 1/2.3" compact (6.2 mm wide) writing 4000 px: 645 px/mm, so 4.3 mm is 2775 px at full size. The file
    # is a copy resized to 1600 px with the EXIF kept, which is what PixelXDimension tells apart.
    exif = _exif("Canon", "Canon PowerShot ELPH 300 HS", f=4.3, plane_x=16393.44, unit=2, width=4000)
    prior = tags.focal_prior(exif, "Canon", "Canon PowerShot ELPH 300 HS", (1600, 1200))
    assert prior is not None and prior.source == "focal-plane"
    assert prior.pixels(1600, 1200) == pytest.approx(4.3 * 16393.44 / 25.4 * 0.4, rel=1e-6)
    # in centimetres, and without PixelXDimension (taken as the file's own size)
    prior = tags.focal_prior(_exif(f=4.3, plane_x=6454.1, unit=3), "", "", (4000, 3000))
    assert prior is not None and prior.pixels(4000, 3000) == pytest.approx(4.3 * 645.41, rel=1e-6)


def test_sensor_table_when_only_the_focal_length_is_tagged() -> None:
    prior = tags.focal_prior(_exif("DJI", "FC6310", f=8.8), "DJI", "FC6310", (5472, 3648))
    assert prior is not None and prior.source == "sensor-table"
    assert prior.pixels(5472, 3648) == pytest.approx(8.8 / 13.2 * 5472)  # 1" sensor, 13.2 mm wide
    # the make repeated at the start of the model, and case, do not matter
    assert tags.focal_prior(_exif(f=8.8), "dji ", "DJI FC6310", (5472, 3648)) == prior
    assert tags.focal_prior(_exif(f=8.8), "Acme", "Unknown 1", (5472, 3648)) is None


def test_nonsense_tags_give_no_prior() -> None:
    assert tags.focal_prior(_exif(f35=0), "", "", (4000, 3000)) is None
    assert tags.focal_prior(_exif(f=0.0), "", "", (4000, 3000)) is None
    # a dpi-like focal-plane resolution (72 per inch) would put the focal length at 0.003 of the width
    assert tags.focal_prior(_exif(f=4.3, plane_x=72.0, unit=2), "", "", (4000, 3000)) is None


def _gps_exif(**gps: object) -> Image.Exif:
    exif = Image.Exif()
    g = exif.get_ifd(0x8825)
    g[1], g[2], g[3], g[4], g[6] = "N", (55.0, 41.0, 53.4), "E", (13.0, 11.0, 43.4), 37.0
    codes = {"dop": 11, "h_error": 31}
    for name, value in gps.items():
        g[codes[name]] = value
    return exif


def test_gps_accuracy_from_the_tags() -> None:
    assert tags.gps_tag(Image.Exif()) is None
    plain = tags.gps_tag(_gps_exif())
    assert plain is not None
    assert plain.lla == pytest.approx((55 + 41 / 60 + 53.4 / 3600, 13 + 11 / 60 + 43.4 / 3600, 37))
    assert (plain.sigma_horizontal, plain.sigma_vertical) == (tags.DEFAULT_GPS_SIGMA_M, 2 * tags.DEFAULT_GPS_SIGMA_M)
    stated = tags.gps_tag(_gps_exif(h_error=1.5, dop=10.0))  # the stated error wins over the DOP
    assert stated is not None and (stated.sigma_horizontal, stated.sigma_vertical) == (1.5, 3.0)
    dop = tags.gps_tag(_gps_exif(dop=10.0))  # a phone's DOP of 10: 20 m
    assert dop is not None and dop.sigma_horizontal == 10 * tags.RANGE_ERROR_M
    xmp = ('<rdf:Description drone-dji:RtkFlag="50" drone-dji:RtkStdLon="0.03" drone-dji:RtkStdLat="0.04" '
           'drone-dji:RtkStdHgt="0.05"/>')
    rtk = tags.gps_tag(_gps_exif(dop=10.0), xmp)
    assert rtk is not None
    assert rtk.sigma_horizontal == pytest.approx(np.hypot(0.03, 0.04) / np.sqrt(2)) and rtk.sigma_vertical == 0.05


def _save(path: Path, size: tuple[int, int], exif: Image.Exif | None) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize(size)
    image.save(path, "JPEG", **({"exif": exif} if exif is not None else {}))


def test_photos_share_intrinsics_only_with_the_same_camera_and_frame(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    camera = {"make": "DJI", "model": "FC6310"}
    _save(tmp_path / "a.jpg", (800, 600), _exif(**camera, f35=24))
    _save(tmp_path / "b.jpg", (800, 600), _exif(**camera, f35=24))
    _save(tmp_path / "crop.jpg", (600, 600), _exif(**camera, f35=24))  # another frame of the same camera
    _save(tmp_path / "portrait.jpg", (600, 800), _exif(**camera, f35=24))  # held upright
    sideways = _exif(**camera, f35=24)
    sideways[0x0112] = 6  # stored landscape, shown portrait: the same upright frame as portrait.jpg
    _save(tmp_path / "sideways.jpg", (800, 600), sideways)
    _save(tmp_path / "zoomed.jpg", (800, 600), _exif(**camera, f35=48))
    _save(tmp_path / "scan.jpg", (800, 600), None)  # no EXIF at all
    photos = {n: prepare_photo(store, n, tmp_path / "out" / n, 400) for n in
              ("a.jpg", "b.jpg", "crop.jpg", "portrait.jpg", "sideways.jpg", "zoomed.jpg", "scan.jpg")}
    keys = {n: p.camera_key for n, p in photos.items()}
    assert keys["a.jpg"] == keys["b.jpg"] and keys["portrait.jpg"] == keys["sideways.jpg"]
    assert len({keys[n] for n in ("a.jpg", "crop.jpg", "portrait.jpg", "zoomed.jpg", "scan.jpg")}) == 5
    assert photos["portrait.jpg"].original_size == photos["sideways.jpg"].original_size == (600, 800)
    assert photos["scan.jpg"].focal_px is None and photos["scan.jpg"].gps is None
    # the same lens on the same sensor: the same focal length in pixels whichever way the camera was held
    assert photos["portrait.jpg"].focal_px == pytest.approx(photos["a.jpg"].focal_px)
    assert photos["zoomed.jpg"].focal_px == pytest.approx(2 * photos["a.jpg"].focal_px)
