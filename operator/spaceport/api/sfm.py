"""Options of the SfM stage (pycolmap). The stage and the CRD both read this model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel

MatchingMode = Literal["auto", "sequential", "spatial", "exhaustive"]
MapperKind = Literal["incremental", "global"]
FocalMode = Literal["auto", "refine", "exif"]
CameraModel = Literal["SIMPLE_RADIAL", "RADIAL", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE"]


class SfmOptions(ApiModel):
    """How photos become cameras and a sparse point cloud."""

    matching: MatchingMode = Field(
        default="auto",
        description="auto: spatial with GPS tags, sequential for ordered flights, exhaustive for small sets.",
    )
    mapper: MapperKind = Field(
        default="global",
        description="The mapper tried first: global (the default) or incremental (rotation and position averaging, "
        "then one bundle adjustment). When its model registers under 90% of the photos or disagrees with their GPS "
        "tags, the other one is tried and the model with more registered photos kept (metrics.mapper).",
    )
    max_image_size: int = Field(
        default=1600, ge=64, le=16384, description="Longest side, in pixels, of images used for SfM/training."
    )
    min_registered_fraction: float = Field(
        default=0.5, gt=0, le=1, description="Fail when fewer of the usable images register."
    )
    camera_model: CameraModel = Field(
        default="SIMPLE_RADIAL",
        description="COLMAP camera model estimated per camera (one per make, model, image size and focal length); "
        "images are undistorted to PINHOLE afterwards.",
    )
    focal_length: FocalMode = Field(
        default="auto",
        description="auto: start from the EXIF focal length (35 mm equivalent, focal-plane resolution or the "
        "sensor table) and refine it; where the photos cannot tell it from the depth (flat ground seen from far "
        "above: relief under 2% of the height) also map with it held and keep the model closer to its GPS tags; "
        "refine: always refine; exif: hold it while mapping (refined after all when too few photos register).",
    )
    max_features: int = Field(
        default=8192, ge=256, le=65536, description="Most SIFT features kept per image."
    )
    feature_budget: int = Field(
        default=8_000_000, ge=1000, le=1_000_000_000,
        description="Most SIFT keypoints kept over all images together: a set of more than featureBudget / "
        "maxFeatures images keeps fewer per image (never under 1024; metrics.featuresPerImage), so the mappers, "
        "which hold every feature in memory (about 650 bytes each, measured), stay within the SfM Job's memory.",
    )
    spatial_neighbors: int = Field(
        default=12, ge=2, le=500,
        description="Spatial matching: each image is matched with this many nearest images by GPS position.",
    )
    sequential_overlap: int = Field(
        default=10, ge=1, le=500,
        description="Sequential matching: each image is matched with this many following images in name order.",
    )
    exhaustive_max_images: int = Field(
        default=40, ge=0, le=5000,
        description="auto: image sets up to this size without GPS tags are matched exhaustively (every pair).",
    )
