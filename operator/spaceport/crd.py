"""Generate the CustomResourceDefinition from the pydantic models (``make crd``).

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 subset: no ``$ref``,
no ``anyOf`` of types, ``exclusiveMinimum`` as a boolean, int-or-string marked explicitly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from spaceport.api import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ReconstructionSpec,
    ReconstructionStatus,
)

CRD_FILE = f"{PLURAL}.{GROUP}.yaml"
INPUT_IMMUTABLE_RULE = {
    "rule": "!has(oldSelf.status) || !has(oldSelf.status.run) || self.spec.input == oldSelf.spec.input",
    "message": "spec.input is immutable once a run has started: create a new Reconstruction instead",
}
"""A transition rule: it needs the old object's status, so it lives on the root, not in the models."""
_DROP_KEYS = {"title", "default", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        types = {v.get("type") for v in variants}
        if types == {"string", "integer"}:
            return {**_structural(rest, defs), "x-kubernetes-int-or-string": True}
        if len(variants) == 1:
            return _structural({**variants[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {variants} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string" if isinstance(value, str) else "integer")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas forbid it beside properties; the API server prunes instead
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
        out["type"] = "object"
    if out.get("enum") and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type, mode: str = "validation") -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode=mode)  # type: ignore[attr-defined]
    return _structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(ReconstructionSpec)
    status_schema = openapi_schema(ReconstructionStatus, mode="serialization")
    status_schema.pop("required", None)  # status is written piecemeal by the operator
    status_schema["x-kubernetes-preserve-unknown-fields"] = True  # kopf keeps its own records there
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.stage"},
        {"name": "Progress", "type": "number", "jsonPath": ".status.progress", "description": "percent"},
        {"name": "Ratio", "type": "number", "jsonPath": ".status.metrics.compressionRatio"},
        {"name": "PSNR", "type": "number", "jsonPath": ".status.metrics.psnr"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Photos in, a compressed 3D Gaussian Splat out.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [INPUT_IMMUTABLE_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_json_schema(node: Any) -> Any:
    """Turn the CRD's OpenAPI v3 schema back into JSON Schema (for jsonschema-based validation)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(key) is True:
            out[key] = out.pop(bound)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    return out


def crd_json_schema() -> dict[str, Any]:
    """The Reconstruction's whole-object schema as JSON Schema."""
    return to_json_schema(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def render_crd() -> str:
    header = "# Generated by `make crd` from operator/spaceport/api. Do not edit by hand.\n"
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render_crd()
    for target in args or ["-"]:
        if target == "-":
            sys.stdout.write(text)
        else:
            Path(target).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
