"""What the real stages of a production test wrote or are to find: result.json of a stage that finished earlier in a
run, fingerprinted for the inputs it would see, so the real stages of the next Jobs take it as done (a result
without one is refused: it could be another run's); and how far a training has come."""

from __future__ import annotations

import json
from pathlib import Path
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


async def training_step(progress: Path, least: int = 10) -> int | None:
    """The step a training's progress.json reports, once it is at least ``least`` (None before: for ``eventually``)."""
    if not progress.exists():
        return None
    message = json.loads(progress.read_text()).get("message", "")
    if message.startswith("step "):
        step = int(message.split()[1].split("/")[0])
        return step if step >= least else None
    return None
