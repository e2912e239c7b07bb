"""What each stage reports in its result.json ``metrics``: one typed model per stage (camelCase on the wire).

Every stage times its steps under one key, ``durations`` (step name -> seconds); the stage's whole wall time is
the result's own ``durationSeconds``. Unknown keys are kept (``extra="allow"``) so that a result written by a
newer stage still reads, but the stages' tests check that a real run reports none.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class StageMetrics(BaseModel):
    """Base of the per-stage metrics."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    durations: dict[str, float] = Field(default_factory=dict, description="Seconds per step of the stage.")

    def to_wire(self) -> dict[str, Any]:
        """The result.json form: camelCase, the fields the stage set (a ``None`` it set says "not measured")."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    @property
    def unknown(self) -> list[str]:
        """Keys no field of the model names (a typo, or a metric added without a field)."""
        return sorted(self.model_extra or {})


class SfmMetrics(StageMetrics):
    images_found: int | None = Field(default=None, description="Image files under the input.")
    images_used: int | None = Field(default=None, description="Images that could be read and were used.")
    registered_images: int | None = None
    registered_fraction: float | None = None
    mean_reprojection_error: float | None = Field(default=None, description="Pixels.")
    points3d: int | None = Field(default=None, alias="points3D")
    mean_track_length: float | None = None
    features_per_image: int | None = Field(default=None, description="The SIFT feature cap each image had "
                                           "(sfm.maxFeatures, lower for sets past sfm.featureBudget).")
    mean_features: float | None = Field(default=None, description="SIFT features found per image, on average.")
    matching_mode: str | None = None
    image_pairs: int | None = Field(default=None, description="Image pairs matched.")
    verified_pairs: int | None = Field(default=None, description="Matched pairs that passed geometric verification.")
    mapper: str | None = None
    cameras: int | None = None
    focal_length: str | None = Field(default=None, description="What became of the focal length (kept, refined).")
    focal_length_reason: str | None = None
    components: int | None = None
    gps_images: int | None = None
    georeference: dict[str, Any] | None = None
    gps_residual_meters: float | None = None
    gps_residual_horizontal_meters: float | None = None
    gps_residual_vertical_meters: float | None = None
    gps_outliers: int | None = None
    peak_rss_bytes: int | None = Field(default=None, description="Peak resident memory of the stage's process.")
    # Written before the one durations key: step name -> seconds under ``durationsSeconds``.
    durations: dict[str, float] = Field(default_factory=dict, validation_alias=AliasChoices(
        "durations", "durationsSeconds"), serialization_alias="durations", description="Seconds per step.")


class TrainMetrics(StageMetrics):
    gaussians: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    initial_psnr: float | None = None
    eval_views: str | None = Field(default=None, description="heldOut or train: the views PSNR/SSIM/LPIPS were "
                                   "measured on.")
    steps: int | None = None
    steps_per_second: float | None = None
    peak_memory_bytes: int | None = None
    peak_rss_bytes: int | None = None
    image_width: int | None = None
    image_height: int | None = None
    device: str | None = None
    floaters_removed: int | None = None
    psnr_neighbour_colour: float | None = None
    photo_gain_spread: float | None = None
    photo_offset_spread: float | None = None
    psnr_vignetted: float | None = None
    """Held-out PSNR of the render through its camera's learned vignetting (a camera property learned from
    the training photos; the headline ``psnr`` renders the splats alone)."""
    vignetting_corner_gain: list[float] | None = None
    """Per camera, the learned vignetting gain in the farthest corner (1.0: none)."""
    psnr_photographed: float | None = None
    """Held-out PSNR of the render through what training learned beside the splats, from the training photos only:
    its camera's vignetting and the scene's directional light, where learned (the headline ``psnr`` renders the
    splats alone)."""
    light_gain_range: list[float] | None = None
    """The smallest and largest gain of the learned directional light."""
    resumed_from_step: int | None = None
    blocks: int | None = None
    """Partitioned training: how many blocks were trained and merged (absent: one training)."""
    block: int | None = None
    """In a block's own result: which block it is."""

    @model_validator(mode="before")
    @classmethod
    def _old_duration(cls, data: Any) -> Any:
        # Written before the one durations key: the training loop's seconds as ``durationSeconds``.
        if isinstance(data, dict) and "durationSeconds" in data and "durations" not in data:
            data = dict(data)
            data["durations"] = {"training": data.pop("durationSeconds")}
        return data


class CompressMetrics(StageMetrics):
    splats: int | None = None
    dropped_non_finite: int | None = None
    sh_bands: int | None = None
    ply_bytes: int | None = None
    sog_bytes: int | None = None
    compression_ratio: float | None = None
    sog_file_bytes: dict[str, int] = Field(default_factory=dict)
    ordering: str | None = None
    ordering_bytes: dict[str, int] = Field(default_factory=dict)
    sh_palette_size: int | None = None
    sh_palette_colour_error: float | None = None
    sh_palette_tried: list[list[int | float]] = Field(default_factory=list)
    sogs_v1_bytes: int | None = Field(default=None, alias="sogsV1Bytes")
    sogs_v1_splats: int | None = Field(default=None, alias="sogsV1Splats")
    georef: dict[str, Any] | None = None
    psnr_vs_uncompressed_db: float | None = None
    ssim_vs_uncompressed: float | None = None
    quality_views: int | None = None
    quality_renderer: str | None = None
    psnr_drop_db: float | None = None
    psnr_drop_views: int | None = None
    scene_format: str | None = Field(
        default=None, description="What the viewer page shows: sog (scene.sog, loaded whole) or sog-streamed "
        "(lod/lod-meta.json, streamed by level of detail).")
    streamed_bytes: int | None = Field(default=None, description="All files of the streamed SOG.")
    lod_counts: list[int] = Field(default_factory=list, description="Splats per level of the streamed SOG.")
    lod_chunks: int | None = Field(default=None, description="Chunk folders (unbundled SOGs) of the streamed SOG.")
    lod_leaves: int | None = Field(default=None, description="Leaves of the streamed SOG's spatial tree.")
