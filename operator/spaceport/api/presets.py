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
    # Minutes on a laptop CPU: a quick look at whether the photos reconstruct at all.
    "draft": {
        SFM.name: {"max_image_size": 800},
        TRAIN.name: {"iterations": 2000, "max_gaussians": 200_000, "sh_degree": 1},
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
