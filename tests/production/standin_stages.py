"""`spaceport stage` with quick stand-ins for the stages' work, for the kubelet stand-in (``Kubelet(command=...)``).

Everything around the work is the real thing: the CLI, the owner check, the runner (fingerprints, attempt.json,
result.json, StaleOutput) and the termination message. Each stand-in writes one file into its stage folder and
reports a few of its stage's metrics, in well under a second. Run as a script: ``python standin_stages.py stage
sfm --input ... --output ... --config ...``.
"""

from __future__ import annotations

import json
import sys

from spaceport.api import STAGES
from spaceport.cli import main
from spaceport.contract import StageContext, StageOutput
from spaceport.layout import join
from spaceport.stages.runner import STAGE_FUNCTIONS

MADE = "made.json"
"""The one file each stand-in writes: the options it ran with."""


def quick_stage(ctx: StageContext) -> StageOutput:
    options = ctx.options.model_dump(mode="json", by_alias=True)
    ctx.output.write_text(MADE, json.dumps(options, sort_keys=True))
    photos = len(ctx.input.list()) if ctx.stage == STAGES[0] else 0
    metrics = {"sfm": {"imagesFound": photos, "imagesUsed": photos}, "train": {"gaussians": 100},
               "compress": {"sogBytes": 10}}[ctx.stage]
    return StageOutput(metrics=metrics, outputs={ctx.stage: join(ctx.output.uri, MADE)})


if __name__ == "__main__":
    for name in STAGES:
        STAGE_FUNCTIONS[name] = "__main__:quick_stage"
    sys.exit(main())
