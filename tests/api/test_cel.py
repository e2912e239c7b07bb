"""The CRD's CEL rules, evaluated by a CEL interpreter, agree with the pydantic validators."""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema
import pytest
from pydantic import ValidationError

from spaceport.api import ReconstructionSpec
from spaceport.crd import build_crd, crd_json_schema

SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
ENV = celpy.Environment()


def cel_failures(obj: Any, schema: dict = SCHEMA, old: Any = None) -> list[str]:
    """Messages of every x-kubernetes-validations rule that ``obj`` breaks (transition rules need ``old``)."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        activation = {"self": celpy.json_to_cel(obj)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not ENV.program(ENV.compile(rule["rule"])).evaluate(activation):
            failures.append(rule["message"])
    for name, sub in schema.get("properties", {}).items():
        if isinstance(obj, dict) and name in obj:
            old_sub = old.get(name) if isinstance(old, dict) else None
            failures += cel_failures(obj[name], sub, old_sub)
    return failures


def manifest(spec: dict, status: dict | None = None) -> dict:
    m = {"apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction", "metadata": {"name": "x"},
         "spec": spec}
    if status is not None:
        m["status"] = status
    return m


GOOD = {"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://results/site"}}
CASES = [
    ("good", GOOD, True),
    ("path on a volume", {"input": {"uri": "photos", "volumeClaim": "data"},
                          "output": {"uri": "results", "volumeClaim": "data"}}, True),
    ("output beside input with a shared prefix", {"input": {"uri": "s3://b/site"},
                                                  "output": {"uri": "s3://b/site-results"}}, True),
    ("path without volume", {"input": {"uri": "photos"}, "output": GOOD["output"]}, False),
    ("other scheme", {"input": {"uri": "gs://photos/x"}, "output": GOOD["output"]}, False),
    ("no bucket", {"input": {"uri": "s3:///x"}, "output": GOOD["output"]}, False),
    ("output inside input", {"input": {"uri": "s3://b/site"}, "output": {"uri": "s3://b/site/out"}}, False),
    ("output equals input", {"input": {"uri": "s3://b/site/"}, "output": {"uri": "s3://b/site"}}, False),
    ("two secrets", {"input": {"uri": "s3://a/x", "credentialsSecret": "one"},
                     "output": {"uri": "s3://b/y", "credentialsSecret": "two"}}, False),
]


@pytest.mark.parametrize(("name", "spec", "valid"), CASES, ids=[c[0] for c in CASES])
def test_cel_and_pydantic_agree(name: str, spec: dict, valid: bool) -> None:
    cel_ok = not cel_failures(manifest(spec))
    try:
        ReconstructionSpec.model_validate(spec)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    assert (cel_ok, pydantic_ok) == (valid, valid)
    if valid:
        jsonschema.validate(manifest(spec), crd_json_schema())


def test_input_is_immutable_once_a_run_started() -> None:
    old = manifest(GOOD, status={"run": 1, "phase": "Running"})
    moved = copy.deepcopy(old)
    moved["spec"]["input"]["uri"] = "s3://photos/elsewhere"
    assert cel_failures(moved, old=old) == [
        "spec.input is immutable once a run has started: create a new Reconstruction instead"
    ]
    retuned = copy.deepcopy(old)
    retuned["spec"]["train"] = {"iterations": 100}
    assert cel_failures(retuned, old=old) == []
    not_started = manifest(GOOD)
    moved_early = copy.deepcopy(not_started)
    moved_early["spec"]["input"]["uri"] = "s3://photos/elsewhere"
    assert cel_failures(moved_early, old=not_started) == []


def test_every_rule_compiles_and_strings_in_rules_are_bounded() -> None:
    def walk(node: dict, path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            ENV.compile(rule["rule"])
        for name, sub in node.get("properties", {}).items():
            if sub.get("type") == "string" and "x-kubernetes-validations" in node and name in str(
                node["x-kubernetes-validations"]
            ):
                assert "maxLength" in sub, f"{path}.{name} is used in a CEL rule and needs maxLength"
            walk(sub, f"{path}.{name}")

    walk(SCHEMA, "$")
