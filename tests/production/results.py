"""result.json of a stage that finished earlier in a run, fingerprinted for the inputs it would see, so the real
stages of the next Jobs take it as done (a result without one is refused: it could be another run's)."""

from __future__ import annotations

from typing import Any

from spaceport.api import ReconstructionSpec
from spaceport.stages.runner import fingerprint
from spaceport.storage import Store
from tests.operator.test_lifecycle import result


def finished(stage: str, metrics: dict[str, Any], spec: dict[str, Any], input: Store) -> str:
    """The JSON of ``stage``'s result as the runner writes it, for ``spec``'s options and ``input`` as it is now."""
    options = ReconstructionSpec.model_validate(spec).stage_options(stage)
    wanted, parts = fingerprint(stage, options, input)
    return result(stage, metrics).model_copy(update={"fingerprint": wanted, "fingerprint_parts": parts}).to_json()
