"""Training stage (minimal until the 3DGS trainer lands): check the SfM output is there."""

from __future__ import annotations

from spaceport.contract import BadInputError, StageContext, StageOutput


def run_train(ctx: StageContext) -> StageOutput:
    files = ctx.input.list()
    if not files:
        raise BadInputError(f"no SfM output under {ctx.input.uri}")
    return StageOutput(metrics={"inputFiles": len(files)})
