"""SfM stage (minimal until the pycolmap stage lands): find and validate the photos, copy them on."""

from __future__ import annotations

from spaceport.contract import BadInputError, StageContext, StageOutput

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def run_sfm(ctx: StageContext) -> StageOutput:
    images = [k for k in ctx.input.list() if k.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise BadInputError(f"no images found under {ctx.input.uri}")
    for i, key in enumerate(images):
        ctx.output.write_bytes(f"images/{key}", ctx.input.read_bytes(key))
        ctx.progress.update((i + 1) / len(images), f"copied {i + 1}/{len(images)} images")
    return StageOutput(metrics={"images": len(images)}, outputs={"images": ctx.output.uri_of("images")})
