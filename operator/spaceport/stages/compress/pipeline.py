"""From an in-memory scene to the bytes of every requested output (no storage here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spaceport.api.compress import CompressOptions
from spaceport.contract import BadInputError
from spaceport.splats import SH_COEFFS_FOR_DEGREE, GaussianScene
from spaceport.stages.compress import sog, sogs_v1
from spaceport.stages.compress.ordering import morton_order
from spaceport.stages.compress.palette import ShPalette, build_palette

Progress = Callable[[float, str], None]


@dataclass
class Encoded:
    sog_files: dict[str, bytes]  # SOG v2 files, meta.json included
    v1_files: dict[str, bytes] | None
    ordering: str
    palette: ShPalette | None
    sizes_by_ordering: dict[str, int] = field(default_factory=dict)  # total v2 bytes per ordering tried
    durations: dict[str, float] = field(default_factory=dict)


NVIDIA_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device; without the NVIDIA driver's files the answer is no, and
    importing torch to hear it costs ~2 CPU-seconds, more than encoding a small scene."""
    if not any(Path(p).exists() for p in NVIDIA_DRIVER_FILES):
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise BadInputError("device: cuda was asked for but this node has no CUDA device (use auto or cpu)")
    return name


def wants_streamed(options: CompressOptions, count: int) -> bool:
    """Whether a scene of ``count`` splats is also written as a streamed SOG."""
    return options.streamed == "always" or (options.streamed == "auto" and count > options.streamed_min_splats)


def keep_bands(scene: GaussianScene, bands: int) -> GaussianScene:
    k = SH_COEFFS_FOR_DEGREE[min(bands, scene.sh_degree)]
    if k == scene.shN.shape[1]:
        return scene
    return GaussianScene(scene.means, scene.scales, scene.quats, scene.opacities, scene.sh0,
                         np.ascontiguousarray(scene.shN[:, :k]), scene.model)


def encode_scene(scene: GaussianScene, options: CompressOptions, *, extra: dict[str, Any] | None = None,
                 progress: Progress | None = None) -> Encoded:
    def report(fraction: float, message: str) -> None:
        if progress:
            progress(fraction, message)

    device = resolve_device(options.device)
    durations: dict[str, float] = {}
    t = time.perf_counter()
    palette = None
    if scene.shN.shape[1] > 0:
        report(0.0, f"SH palette for {scene.count} splats")
        palette = build_palette(scene.shN, target_error=options.sh_palette_error, max_size=options.sh_palette_max,
                                iterations=options.kmeans_iterations, seed=options.seed, device=device,
                                progress=lambda f: report(0.5 * f, "SH palette"))
    durations["paletteSeconds"] = time.perf_counter() - t

    orderings = {"auto": ["morton", "plas"], "morton": ["morton"], "plas": ["plas"]}[options.ordering]
    if options.ordering == "auto" and scene.count > options.plas_max_splats:
        orderings = ["morton"]
    books = sog.codebooks(scene, palette)
    morton = morton_order(scene.means)
    width, _ = sog.texture_size(scene.count)
    candidates: dict[str, dict[str, bytes]] = {}
    for i, name in enumerate(orderings):
        t = time.perf_counter()
        span = 0.5 + 0.4 * i / len(orderings), 0.5 + 0.4 * (i + 1) / len(orderings)
        order = morton
        if name == "plas":
            import torch  # PLAS is torch code (CPU or CUDA); Morton-only runs never import it

            from spaceport.stages.compress.plas import plas_order, sort_features

            report(span[0], "PLAS sort")
            order = plas_order(sort_features(scene).to(device), torch.from_numpy(morton).to(device), width,
                               seed=options.seed,
                               progress=lambda f, a=span[0], b=span[1]: report(a + 0.5 * (b - a) * f, "PLAS sort"),
                               ).cpu().numpy()
        report(span[0] + 0.5 * (span[1] - span[0]), f"encoding SOG ({name} order)")
        candidates[name] = sog.encode_v2(scene, order, palette, extra=extra, webp_method=options.webp_effort,
                                       books=books)
        durations[f"{name}Seconds"] = time.perf_counter() - t
    sizes = {name: sum(len(v) for v in files.values()) for name, files in candidates.items()}
    chosen = min(sizes, key=lambda k: sizes[k])
    v1 = None
    if "sogs-v1" in options.formats:
        t = time.perf_counter()
        report(0.9, "encoding SOGS v1")
        v1 = sogs_v1.encode_v1(scene, palette, ordering=chosen, seed=options.seed, device=device,
                               webp_method=options.webp_effort)
        durations["sogsV1Seconds"] = time.perf_counter() - t
    return Encoded(candidates[chosen], v1, chosen, palette, sizes, durations)
