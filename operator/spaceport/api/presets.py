"""Presets: named per-stage defaults (image size, iterations, Gaussian cap, SH bands). Explicit fields win.

``standard`` is the option models' own defaults, so a spec without a preset and one with
``preset: standard`` run the same. The table is data; tests check every entry against the models.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from spaceport.api.stages import COMPRESS, SFM, TRAIN

Preset = Literal["draft", "standard", "high"]
PRESETS: tuple[str, ...] = ("draft", "standard", "high")
DEFAULT_PRESET = "standard"

PRESET_TABLE: dict[str, dict[str, dict[str, Any]]] = {
    # Minutes on a laptop CPU: a quick look at whether the photos reconstruct at all. A run this short trains
    # best with two thirds of its steps at half size (a third of the cost each: more steps in the same time)
    # and learning rates 2-4x 3DGS's, no opacity reset, a small opacity term and a squared-error term beside
    # L1 + SSIM. Measured on a real 167-photo survey (seneca/, one SfM model, same machine): 2,000 full-size
    # steps with 3DGS's rates 23.17 dB held-out; these settings 24.21 dB (1,000 + 1,000 steps: 23.64); twice
    # these rates 20.84; SH degree 0 23.89; MCMC 19.34; stereo seeds or a 300k cap +/-0.1 dB for 30-50% more
    # time; per-photo exposure 22.89 (docs/training-notes.md, "Real photos").
    "draft": {
        SFM.name: {"max_image_size": 800},
        TRAIN.name: {"iterations": 3000, "half_resolution_steps": 2000, "max_gaussians": 200_000, "sh_degree": 1,
                     "position_lr": 5e-4, "color_lr": 1e-2, "opacity_lr": 0.1, "scale_lr": 1e-2, "rotation_lr": 2e-3,
                     "opacity_reset_every": 1_000_000, "opacity_reg": 0.01, "mse_weight": 10.0},
        COMPRESS.name: {"sh_bands": 1},
    },
    "standard": {SFM.name: {}, TRAIN.name: {}, COMPRESS.name: {}},
    # A GPU and an hour: full-resolution detail for publishing.
    "high": {
        SFM.name: {"max_image_size": 3200},
        TRAIN.name: {"iterations": 30_000, "max_gaussians": 3_000_000, "sh_degree": 3},
        COMPRESS.name: {"sh_bands": 3},
    },
}
"""Preset → stage → option (Python field name) → value."""

M = TypeVar("M", bound=BaseModel)


def preset_defaults(preset: str, stage: str) -> dict[str, Any]:
    """The preset's values for one stage (Python field names)."""
    if preset not in PRESET_TABLE:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    return dict(PRESET_TABLE[preset].get(stage, {}))


def apply_preset(options: M, preset: str, stage: str) -> M:
    """``options`` with the preset's values for every field the user did not set (``model_fields_set``)."""
    explicit = options.model_dump(include=set(options.model_fields_set))
    return type(options).model_validate({**preset_defaults(preset, stage), **explicit})
