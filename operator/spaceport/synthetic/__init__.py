"""Synthetic drone flights over a procedural village, with GPS EXIF and ground-truth cameras.

>>> flight = generate_flight("/tmp/photos", preset="demo")   # 40 JPEGs, 480x360
>>> flight.world_to_camera.shape, flight.origin
"""

from spaceport.synthetic.flight import (
    CAMERA_MAKE,
    CAMERA_MODEL,
    DEFAULT_ORIGIN,
    PRESETS,
    Flight,
    FlightPath,
    generate_flight,
)
from spaceport.synthetic.geo import enu_to_geodetic, geodetic_to_enu

__all__ = [
    "CAMERA_MAKE",
    "CAMERA_MODEL",
    "DEFAULT_ORIGIN",
    "PRESETS",
    "Flight",
    "FlightPath",
    "enu_to_geodetic",
    "generate_flight",
    "geodetic_to_enu",
]
