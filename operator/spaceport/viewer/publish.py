"""The compress stage's publish step (``COMPRESS.publish`` in api/stages.py): the viewer page next to scene.sog.

The runner calls it after the stage, so the stage itself knows nothing of the viewer.
"""

from __future__ import annotations

from typing import Any

from spaceport.api import COMPRESS
from spaceport.contract import StageContext, StageOutput
from spaceport.viewer import write_viewer


def publish_viewer(ctx: StageContext, produced: StageOutput, metrics: dict[str, Any]) -> dict[str, str]:
    """Write the viewer page beside the bundled scene (when the options made one); returns its output URI."""
    if "sog" not in ctx.options.formats or not ctx.output.exists(COMPRESS.files.sog):
        return {}
    return write_viewer(ctx.output, COMPRESS.files.sog, source=ctx.input, means=produced.handoff.get("means"),
                        metrics=metrics, warn=ctx.warn)
