"""What a photo's metadata says about its camera and position: a focal-length prior and a GPS tag with its
accuracy. Pure functions of Pillow's EXIF (and the JPEG's XMP packet); no decoding of pixels.

Focal length, in the order a camera's own tags are most specific:
1. ``FocalLengthIn35mmFilm`` (35 mm equivalent, scaled by the image diagonal, COLMAP's convention);
2. ``FocalLength`` with ``FocalPlaneXResolution`` (pixels per unit on the sensor, for the image size the
   camera wrote: ``PixelXDimension``);
3. ``FocalLength`` with the sensor width of the camera model from ``sensors.csv`` (common drones and
   compact cameras).
Each is a prior only: the SfM stage refines it in bundle adjustment unless the scene pins it.

GPS accuracy (one standard deviation, metres): DJI's RTK XMP tags when present, else
``GPSHPositioningError``, else ``GPSDOP`` times a typical single-frequency range error, else a consumer
receiver's few metres. Altitude is taken as worse than the horizontal position unless a tag says otherwise.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
from PIL import Image

FULL_FRAME_DIAGONAL_MM = 43.267
"""35 mm equivalent focal lengths scale with the diagonal (the crop factor convention COLMAP uses too)."""
DEFAULT_GPS_SIGMA_M = 5.0
"""Horizontal accuracy (1 sigma) assumed for a GPS tag that states none: consumer drones and phones."""
VERTICAL_TO_HORIZONTAL = 2.0
"""GPS and barometric altitude is this much less accurate than the horizontal position, unless tagged."""
RANGE_ERROR_M = 2.0
"""Typical user-equivalent range error of single-frequency GNSS: GPSDOP times this is the 1-sigma error."""
MIN_GPS_SIGMA_M = 0.02
"""Floor on any stated accuracy (RTK receivers state millimetres; camera centres are not that exact)."""

_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um


@dataclass(frozen=True)
class FocalPrior:
    """A focal length as a fraction of the image's longer side (independent of orientation and scaling)."""

    fraction: float
    source: str  # "35mm", "focal-plane" or "sensor-table"

    def pixels(self, width: int, height: int) -> float:
        return self.fraction * max(width, height)


@dataclass(frozen=True)
class GpsTag:
    latitude: float  # degrees
    longitude: float
    altitude: float  # metres
    sigma_horizontal: float  # metres, 1 sigma
    sigma_vertical: float

    @property
    def lla(self) -> tuple[float, float, float]:
        return self.latitude, self.longitude, self.altitude


def ratio(v: object) -> float:
    if isinstance(v, tuple) and len(v) == 2:  # (numerator, denominator) from some writers
        return float(v[0]) / float(v[1])
    return float(v)  # type: ignore[arg-type]


def _positive(v: object) -> float | None:
    try:
        x = ratio(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if np.isfinite(x) and x > 0 else None


@cache
def sensor_widths() -> dict[str, float]:
    """Sensor width (mm) by normalised "make model" from the packaged table."""
    text = resources.files("spaceport.stages.sfm").joinpath("sensors.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    return {_camera_name(r["make"], r["model"]): float(r["sensor_width_mm"]) for r in rows}


def _camera_name(make: str, model: str) -> str:
    make, model = make.strip().lower(), model.strip().lower()
    if model.startswith(make):  # "Canon" + "Canon PowerShot ...": the model often repeats the make
        model = model[len(make):].strip()
    return f"{make} {model}".strip()


def focal_prior(exif: Image.Exif, make: str, model: str, stored_size: tuple[int, int]) -> FocalPrior | None:
    """The focal length the photo's tags imply, for the image as stored (before EXIF orientation)."""
    sub = exif.get_ifd(0x8769)
    long_side = max(stored_size)
    f35 = _positive(sub.get(0xA405))
    if f35 is not None and 5 <= f35 <= 2000:
        return FocalPrior(f35 / FULL_FRAME_DIAGONAL_MM * float(np.hypot(*stored_size)) / long_side, "35mm")
    f_mm = _positive(sub.get(0x920A))
    if f_mm is None or not 0.5 <= f_mm <= 2000:
        return None
    plane = _positive(sub.get(0xA20E))
    unit = _UNIT_MM.get(int(sub.get(0xA210, 2) or 2))
    written_width = _positive(sub.get(0xA002))
    if plane is not None and unit is not None:
        # Pixels per mm on the sensor, for the image the camera wrote; a resized copy scales with it.
        scale = stored_size[0] / written_width if written_width else 1.0
        fraction = f_mm * plane / unit * scale / long_side
        if 0.2 <= fraction <= 20:  # some writers fill the tag with nonsense (dpi-like values)
            return FocalPrior(fraction, "focal-plane")
    width_mm = sensor_widths().get(_camera_name(make, model))
    if width_mm is not None:
        return FocalPrior(f_mm / width_mm, "sensor-table")
    return None


def _xmp_number(xmp: str, name: str) -> float | None:
    m = re.search(rf'{name}\s*=\s*"([-+0-9.eE]+)"', xmp) or re.search(rf"<[\w-]*:?{name}>([-+0-9.eE]+)<", xmp)
    return _positive(m.group(1)) if m else None


def gps_tag(exif: Image.Exif, xmp: str = "") -> GpsTag | None:
    g = exif.get_ifd(0x8825)
    if 2 not in g or 4 not in g:
        return None
    try:
        lat = sum(ratio(x) / 60**i for i, x in enumerate(g[2]))
        lon = sum(ratio(x) / 60**i for i, x in enumerate(g[4]))
        alt = ratio(g[6]) if 6 in g else 0.0
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if str(g.get(1, "N")).upper().startswith("S"):
        lat = -lat
    if str(g.get(3, "E")).upper().startswith("W"):
        lon = -lon
    if g.get(5) in (b"\x01", 1):  # below sea level
        alt = -alt
    if not (np.isfinite([lat, lon, alt]).all() and abs(lat) <= 90 and abs(lon) <= 180) or (lat == 0 and lon == 0):
        return None
    horizontal, vertical = _gps_sigma(g, xmp)
    return GpsTag(lat, lon, alt, horizontal, vertical)


def _gps_sigma(g: dict, xmp: str) -> tuple[float, float]:
    rtk = [_xmp_number(xmp, k) for k in ("RtkStdLon", "RtkStdLat", "RtkStdHgt")] if "RtkStd" in xmp else []
    if rtk and all(v is not None for v in rtk):
        horizontal = float(np.hypot(rtk[0], rtk[1]) / np.sqrt(2))  # type: ignore[arg-type]
        return max(horizontal, MIN_GPS_SIGMA_M), max(float(rtk[2]), MIN_GPS_SIGMA_M)  # type: ignore[arg-type]
    stated = _positive(g.get(31))  # GPSHPositioningError, metres
    if stated is None and (dop := _positive(g.get(11))) is not None:
        stated = dop * RANGE_ERROR_M
    horizontal = max(stated if stated is not None else DEFAULT_GPS_SIGMA_M, MIN_GPS_SIGMA_M)
    return horizontal, VERTICAL_TO_HORIZONTAL * horizontal
