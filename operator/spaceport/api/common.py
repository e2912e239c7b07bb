"""Building blocks shared by every section of the Reconstruction API.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every API type: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict:
        """The JSON form used in manifests and stage configs (camelCase, no unset optionals)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BaseModel):
    """Base of status types: camelCase, tolerant of fields written by newer operators."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Quantity = str | int
"""A Kubernetes resource quantity: ``"500m"``, ``"4Gi"``, ``2``."""


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Resources(ApiModel):
    """Requests and limits of the stage container, as in a Pod spec.

    GPUs are requested as ``nvidia.com/gpu`` in ``limits``.
    """

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class StageScheduling(ApiModel):
    """Where and how a stage's Job runs. Empty fields take the operator's defaults."""

    image: str | None = Field(default=None, description="Container image; default: the operator's stage image.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    resources: Resources | None = None
    active_deadline_seconds: int | None = Field(
        default=None, ge=60, description="Wall-clock limit of the stage's Job, in seconds."
    )


def describe_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field by its dotted (camelCase) path."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        lines.append(f"{where or 'spec'}: {e['msg']}")
    return "; ".join(lines)
