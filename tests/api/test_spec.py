"""Spec validation: every rejection names the field; the run key ignores what doesn't change results."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spaceport.api import ReconstructionSpec, describe_validation_error
from spaceport.layout import spec_run_key

BASE = {"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://results/site"}}


def spec(**changes: object) -> ReconstructionSpec:
    return ReconstructionSpec.model_validate({**BASE, **changes})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"input": {"uri": "gs://photos/x"}}, "input.uri"),
        ({"input": {"uri": "s3://"}}, "input.uri"),
        ({"input": {"uri": "s3://photos/../etc"}}, "input.uri"),
        ({"input": {"uri": "photos/site"}}, "volumeClaim"),
        ({"output": {"uri": "s3://photos/site/out"}}, "lies inside input.uri"),
        ({"retries": 11}, "retries"),
        ({"sfm": {"matching": "psychic"}}, "sfm.matching"),
        ({"train": {"shDegree": 4}}, "train.shDegree"),
        ({"compress": {"formats": []}}, "compress.formats"),
        ({"train": {"scheduling": {"activeDeadlineSeconds": 5}}}, "train.scheduling.activeDeadlineSeconds"),
        ({"colour": "blue"}, "colour"),
        (
            {"input": {"uri": "s3://a/b", "credentialsSecret": "x"},
             "output": {"uri": "s3://c/d", "credentialsSecret": "y"}},
            "credentialsSecret",
        ),
    ],
)
def test_invalid_specs_name_the_field(changes: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(**changes)
    assert expected in describe_validation_error(err.value)


def test_output_on_another_volume_is_not_inside_input() -> None:
    s = ReconstructionSpec.model_validate(
        {"input": {"uri": "data", "volumeClaim": "a"}, "output": {"uri": "data/out", "volumeClaim": "b"}}
    )
    assert s.output.volume_claim == "b"


def test_run_key_ignores_suspend_retries_and_scheduling() -> None:
    base = spec()
    assert spec_run_key(spec(suspend=True)) == spec_run_key(base)
    assert spec_run_key(spec(retries=5)) == spec_run_key(base)
    assert spec_run_key(spec(train={"scheduling": {"nodeSelector": {"pool": "gpu"}}})) == spec_run_key(base)
    assert spec_run_key(spec(train={"iterations": 100})) != spec_run_key(base)
    assert spec_run_key(spec(output={"uri": "s3://results/other"})) != spec_run_key(base)


def test_stage_options_drop_scheduling_and_round_trip() -> None:
    s = spec(train={"iterations": 123, "scheduling": {"image": "x"}})
    opts = s.stage_options("train")
    assert opts.iterations == 123
    assert "scheduling" not in opts.to_wire()
    assert type(opts).model_validate(opts.to_wire()) == opts
