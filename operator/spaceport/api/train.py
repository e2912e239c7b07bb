"""Options of the training stage (3D Gaussian Splatting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel


class TrainOptions(ApiModel):
    """How the sparse model becomes a trained splat scene."""

    iterations: int = Field(default=7000, ge=1, le=1_000_000, description="Optimisation steps.")
    max_gaussians: int = Field(default=1_000_000, ge=1000, description="Cap on the number of Gaussians.")
    sh_degree: int = Field(default=3, ge=0, le=3, description="Spherical-harmonics degree of colour.")
    checkpoint_every: int = Field(default=1000, ge=1, description="Steps between checkpoints.")
    holdout_every: int = Field(default=8, ge=0, description="Every Nth image is held out (0: none).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
