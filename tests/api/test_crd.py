"""The CRD is generated from the pydantic models; the committed files must match the generator."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from spaceport.crd import CRD_FILE, build_crd, crd_json_schema, render_crd

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", [ROOT / "crds" / CRD_FILE, ROOT / "charts/spaceport/crds" / CRD_FILE])
def test_committed_crd_matches_models(path: Path) -> None:
    assert path.read_text() == render_crd(), f"{path} drifted from the models: run `make crd`"


def _schema() -> dict:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: object, path: str = "$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert "$ref" not in node, path
        assert "anyOf" not in node and "oneOf" not in node, path
        if "properties" in node:
            assert node.get("type") == "object", path
            assert "additionalProperties" not in node, path


def test_printer_columns() -> None:
    cols = build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in cols] == ["Phase", "Stage", "Progress", "Ratio", "PSNR", "Age"]


def test_example_manifest_validates_against_crd_schema() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "reconstruction.yaml").read_text())
    schema = crd_json_schema()
    jsonschema.validate(manifest, schema)
    bad = {**manifest, "spec": {**manifest["spec"], "retries": -1}}
    with pytest.raises(jsonschema.ValidationError, match="-1"):
        jsonschema.validate(bad, schema)
