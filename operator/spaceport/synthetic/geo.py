"""WGS84 geodetic <-> local ENU (east, north, up) conversions, in metres and degrees.

Kept free of pycolmap so that the synthetic flights' ground truth is independent of the code under test.
"""

from __future__ import annotations

import numpy as np

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)


def geodetic_to_ecef(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """[..., 3] ECEF metres from latitude/longitude in degrees and ellipsoidal altitude in metres."""
    phi, lam = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
    return np.stack(
        [
            (n + alt) * np.cos(phi) * np.cos(lam),
            (n + alt) * np.cos(phi) * np.sin(lam),
            (n * (1 - WGS84_E2) + alt) * np.sin(phi),
        ],
        axis=-1,
    )


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude, longitude (degrees) and altitude (metres) of ECEF points [..., 3]."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lon = np.arctan2(y, x)
    p = np.hypot(x, y)
    phi = np.arctan2(z, p * (1 - WGS84_E2))
    # Fixed-point iteration converges to sub-millimetre within a few steps near the surface.
    for _ in range(6):
        n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
        alt = p / np.cos(phi) - n
        phi = np.arctan2(z, p * (1 - WGS84_E2 * n / (n + alt)))
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
    alt = p / np.cos(phi) - n
    return np.degrees(phi), np.degrees(lon), alt


def enu_rotation(lat0: float, lon0: float) -> np.ndarray:
    """Rows are the east, north and up unit vectors at (lat0, lon0) in ECEF."""
    phi, lam = np.radians(lat0), np.radians(lon0)
    return np.array(
        [
            [-np.sin(lam), np.cos(lam), 0.0],
            [-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)],
            [np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)],
        ]
    )


def geodetic_to_enu(
    lat: np.ndarray, lon: np.ndarray, alt: np.ndarray, origin: tuple[float, float, float]
) -> np.ndarray:
    """[..., 3] ENU metres relative to ``origin`` = (lat, lon, alt)."""
    ref = geodetic_to_ecef(np.float64(origin[0]), np.float64(origin[1]), np.float64(origin[2]))
    ecef = geodetic_to_ecef(np.asarray(lat, float), np.asarray(lon, float), np.asarray(alt, float))
    return (ecef - ref) @ enu_rotation(origin[0], origin[1]).T


def enu_to_geodetic(enu: np.ndarray, origin: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ref = geodetic_to_ecef(np.float64(origin[0]), np.float64(origin[1]), np.float64(origin[2]))
    return ecef_to_geodetic(np.asarray(enu, float) @ enu_rotation(origin[0], origin[1]) + ref)
