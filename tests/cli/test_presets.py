"""Presets: per-stage defaults from the table, explicit fields win, in the spec and in `spaceport run`."""

from __future__ import annotations

import pytest

from spaceport.api import CompressOptions, ReconstructionSpec, SfmOptions, TrainOptions
from spaceport.api.presets import PRESET_TABLE, PRESETS, apply_preset, preset_defaults
from spaceport.local import resolve_options

OPTION_TYPES = {"sfm": SfmOptions, "train": TrainOptions, "compress": CompressOptions}


def spec(**fields: object) -> ReconstructionSpec:
    return ReconstructionSpec.model_validate(
        {"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://results/site"}, **fields})


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("stage", OPTION_TYPES)
def test_every_preset_value_is_a_valid_option(preset: str, stage: str) -> None:
    values = preset_defaults(preset, stage)
    options = OPTION_TYPES[stage].model_validate(values)
    for name, value in values.items():
        assert getattr(options, name) == value


def test_standard_is_the_models_defaults() -> None:
    for stage, options_type in OPTION_TYPES.items():
        assert spec(preset="standard").stage_options(stage) == options_type()
        assert spec().stage_options(stage) == options_type()


def test_presets_order_cost() -> None:
    draft, standard, high = (spec(preset=p) for p in ("draft", "standard", "high"))
    for field in ("iterations", "max_gaussians"):
        values = [getattr(s.stage_options("train"), field) for s in (draft, standard, high)]
        assert values == sorted(values) and values[0] < values[2], field
    sizes = [s.stage_options("sfm").max_image_size for s in (draft, standard, high)]
    assert sizes[0] < sizes[1] < sizes[2]


CASES = [
    # (preset, spec fields, stage, field, expected)
    ("draft", {}, "sfm", "max_image_size", 800),
    ("draft", {}, "train", "iterations", 3000),
    ("draft", {}, "train", "half_resolution_steps", 2000),
    ("standard", {}, "train", "half_resolution_steps", 0),
    ("draft", {}, "train", "sh_degree", 1),
    ("draft", {}, "compress", "sh_bands", 1),
    ("draft", {"train": {"iterations": 500}}, "train", "iterations", 500),
    ("draft", {"train": {"iterations": 500}}, "train", "max_gaussians", 200_000),
    ("draft", {"sfm": {"maxImageSize": 640}}, "sfm", "max_image_size", 640),
    ("high", {}, "train", "iterations", 30_000),
    ("high", {"compress": {"shBands": 0}}, "compress", "sh_bands", 0),
    # An explicit value equal to the model default still wins over the preset.
    ("draft", {"train": {"shDegree": 3}}, "train", "sh_degree", 3),
    ("high", {"sfm": {"maxImageSize": 1600}}, "sfm", "max_image_size", 1600),
]


@pytest.mark.parametrize(("preset", "fields", "stage", "field", "expected"), CASES)
def test_spec_preset_and_explicit_fields(preset: str, fields: dict, stage: str, field: str, expected: object) -> None:
    assert getattr(spec(preset=preset, **fields).stage_options(stage), field) == expected


def test_scheduling_is_not_an_option_and_does_not_block_the_preset() -> None:
    s = spec(preset="draft", train={"scheduling": {"nodeSelector": {"gpu": "yes"}}})
    assert s.stage_options("train").iterations == PRESET_TABLE["draft"]["train"]["iterations"]


@pytest.mark.parametrize(("preset", "fields", "stage", "field", "expected"), CASES)
def test_local_run_applies_the_same_rules(preset: str, fields: dict, stage: str, field: str,
                                          expected: object) -> None:
    options = resolve_options(fields, preset=preset)
    assert getattr(OPTION_TYPES[stage].model_validate(options[stage]), field) == expected


def test_preset_in_the_config_file_and_the_flag_wins() -> None:
    from_file = resolve_options({"preset": "draft"})
    assert from_file["train"]["iterations"] == 3000
    flag_wins = resolve_options({"preset": "draft"}, preset="high")
    assert flag_wins["train"]["iterations"] == 30_000


def test_unknown_preset_names_the_choices() -> None:
    from spaceport.contract import BadInputError

    with pytest.raises(BadInputError, match="draft, standard, high"):
        resolve_options({}, preset="fast")
    with pytest.raises(ValueError, match="unknown preset"):
        apply_preset(TrainOptions(), "fast", "train")


def test_demo_settings_are_valid_options_over_the_draft_preset() -> None:
    from spaceport.demo import DEMO_CONFIG, DEMO_PRESET

    options = resolve_options(DEMO_CONFIG, preset=DEMO_PRESET)
    assert options["train"]["iterations"] == DEMO_CONFIG["train"]["iterations"]
    assert options["compress"]["shBands"] == DEMO_CONFIG["compress"]["shBands"]
    assert options["train"]["maxGaussians"] == DEMO_CONFIG["train"]["maxGaussians"]
    assert options["sfm"]["maxImageSize"] == DEMO_CONFIG["sfm"]["maxImageSize"]
