"""The compress stage's publish step (``COMPRESS.publish`` in api/stages.py): the viewer page next to the scene.

The runner calls it after the stage, so the stage itself knows nothing of the viewer.
"""

from __future__ import annotations

from typing import Any

from spaceport.api import COMPRESS
from spaceport.contract import StageContext, StageOutput
from spaceport.viewer import STREAMED_INDEX, write_viewer


def publish_viewer(ctx: StageContext, produced: StageOutput, metrics: dict[str, Any]) -> dict[str, str]:
    """Write the viewer page beside the scene the stage made: the streamed SOG when it wrote one, else the
    bundled scene.sog (when the options made one); returns the page's output URI."""
    if "sogStreamed" in produced.outputs:
        scene = STREAMED_INDEX
    elif "sog" in ctx.options.formats and ctx.output.exists(COMPRESS.files.sog):
        scene = COMPRESS.files.sog
    else:
        return {}
    return write_viewer(ctx.output, scene, source=ctx.input, means=produced.handoff.get("means"),
                        metrics=metrics, warn=ctx.warn)
