"""Options of the compression stage (PlayCanvas SOG / SOGS)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel

SogFormat = Literal["sog", "sog-unbundled", "sogs-v1"]
Ordering = Literal["auto", "plas", "morton"]
Streamed = Literal["auto", "always", "never"]


class CompressOptions(ApiModel):
    """How the trained PLY becomes web formats."""

    formats: list[SogFormat] = Field(
        default_factory=lambda: ["sog", "sog-unbundled"], min_length=1,
        description="Outputs: sog (scene.sog bundle), sog-unbundled (sog/meta.json + WebPs), sogs-v1 (sogs-v1/).",
    )
    ordering: Ordering = Field(
        default="morton",
        description="Texel order: morton (Z-order), plas (sorted grid; slower), auto (both, keep the smaller).",
    )
    sh_bands: int = Field(default=3, ge=0, le=3, description="Spherical-harmonics bands kept (0 drops all).")
    kmeans_iterations: int = Field(default=10, ge=1, le=100, description="k-means passes for the SH palette.")
    sh_palette_error: float = Field(
        default=0.02, ge=0, le=1,
        description="Target RMS colour error (0..1 units, over view directions) of the SH palette; the palette "
        "doubles from 1024 entries until it is met or reaches splat-transform's size for the scene.",
    )
    sh_palette_max: int = Field(default=65536, ge=64, le=65536, description="Most SH palette entries.")
    webp_effort: int = Field(
        default=1, ge=0, le=6,
        description="Lossless WebP effort (libwebp method 0-6); measured on splat textures, 4 took 80x longer "
        "than 1 for files 0.1% smaller.",
    )
    plas_max_splats: int = Field(
        default=2_000_000, ge=0,
        description="With ordering auto, scenes with more splats than this use Morton only (PLAS time grows "
        "with the grid).",
    )
    quality_views: int = Field(
        default=4, ge=0, le=1000,
        description="Training cameras rendered to measure psnrDropDb (0 skips the measurement).",
    )
    quality_max_side: int = Field(
        default=480, ge=16, le=8192, description="Longest side, in pixels, of the quality renders.",
    )
    streamed: Streamed = Field(
        default="auto",
        description="Also write a streamed, level-of-detail SOG (lod/lod-meta.json and its chunk folders), which "
        "the viewer page then streams instead of loading scene.sog whole: auto when the scene has more than "
        "streamedMinSplats splats, always, or never.",
    )
    streamed_min_splats: int = Field(
        default=1_000_000, ge=0,
        description="With streamed auto, scenes with more splats than this are also written streamed "
        "(PlayCanvas serves scenes above about a million Gaussians streamed).",
    )
    lod_levels: int = Field(
        default=0, ge=0, le=12,
        description="Levels of the streamed SOG: level 0 holds every splat, each next one about half of the "
        "one before (nearby pairs merged into one Gaussian); 0 halves until the coarsest level holds at most "
        "262,144 splats (at least 2 levels).",
    )
    lod_chunk_splats: int = Field(
        default=524_288, ge=256,
        description="Splats per chunk of the streamed SOG, about (splat-transform's --lod-chunk-count, 512K).",
    )
    lod_chunk_extent: float = Field(
        default=16.0, gt=0,
        description="Widest side of a chunk of the streamed SOG, in scene units, about (splat-transform's "
        "--lod-chunk-extent, 16 m).",
    )
    lod_chunk_min_splats: int = Field(
        default=8192, ge=0,
        description="A chunk with fewer splats than this is not split for its extent (splat-transform's "
        "--lod-chunk-min, 8K): sparse sky and background stay one chunk.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Device for k-means and PLAS (auto: CUDA when present)."
    )
    seed: int = Field(default=0, ge=0, description="Seed of k-means and PLAS; equal seeds give equal files.")
