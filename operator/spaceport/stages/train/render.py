"""Rendering a :class:`GaussianScene` from a camera (``spaceport.cameras``, re-exported here).

The compression stage renders before and after compressing, to report the PSNR drop, through the registry
(``TRAIN.renderer`` names :func:`render`), so it takes and returns plain numpy data.
"""

from __future__ import annotations

import numpy as np
import torch

from spaceport.cameras import CAMERAS_FILE as CAMERAS_FILE
from spaceport.cameras import HOLDOUT_DIR as HOLDOUT_DIR
from spaceport.cameras import Camera as Camera
from spaceport.cameras import cameras_json as cameras_json
from spaceport.cameras import holdout_key as holdout_key
from spaceport.cameras import load_cameras as load_cameras
from spaceport.splats import GaussianScene


def scene_tensors(scene: GaussianScene, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Activated tensors for :func:`rasterize` (scales exponentiated, opacities through a sigmoid)."""

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)

    return {
        "means": t(scene.means),
        "quats": t(scene.quats),
        "scales": torch.exp(t(scene.scales)),
        "opacities": torch.sigmoid(t(scene.opacities)),
        "sh": torch.cat([t(scene.sh0)[:, None, :], t(scene.shN)], 1),
    }


def camera_tensors(camera: Camera, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    viewmat = torch.tensor(camera.world_to_camera, dtype=torch.float32, device=device)
    return viewmat, torch.tensor(camera.K, dtype=torch.float32, device=device)


def render(scene: GaussianScene, camera: Camera, device: str = "cpu") -> np.ndarray:
    """Render ``scene`` from ``camera``: ``[H, W, 3]`` float32 in 0..1 on a black background, in the
    rendering model the scene was trained for (``scene.model``)."""
    from spaceport.stages.train.rasterize import rasterize

    if scene.count == 0:
        return np.zeros((camera.height, camera.width, 3), np.float32)
    with torch.no_grad():
        p = scene_tensors(scene, device)
        viewmat, K = camera_tensors(camera, device)
        image, _, _ = rasterize(p["means"], p["quats"], p["scales"], p["opacities"], p["sh"], viewmat, K,
                                camera.width, camera.height, scene.sh_degree,
                                antialiased=scene.model == "antialiased")
        return image.clamp(0, 1).float().cpu().numpy()
