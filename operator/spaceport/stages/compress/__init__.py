"""Compression stage (minimal until the SOG encoder lands): check a PLY is there."""

from __future__ import annotations

from spaceport.contract import BadInputError, StageContext, StageOutput


def run_compress(ctx: StageContext) -> StageOutput:
    plys = [k for k in ctx.input.list() if k.endswith(".ply")]
    if not plys:
        raise BadInputError(f"no .ply under {ctx.input.uri}")
    return StageOutput(metrics={"plyFiles": len(plys)})
