"""The training loop: one code path for both devices; only the rasterizer differs (see rasterize.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove, reset_opa

from spaceport.api import TrainOptions
from spaceport.splats import GaussianScene
from spaceport.stages.train.appearance import PhotoColour
from spaceport.stages.train.bilateral import PhotoBilateralGrid
from spaceport.stages.train.data import Dataset, View
from spaceport.stages.train.elongation import limit_elongation
from spaceport.stages.train.floaters import FreeSpace
from spaceport.stages.train.light import LR as LIGHT_LR
from spaceport.stages.train.light import DirectionalLight
from spaceport.stages.train.mcmc_cpu import DeviceMCMCStrategy
from spaceport.stages.train.metrics import LpipsScore, psnr, ssim
from spaceport.stages.train.rasterize import SH_C0, rasterize
from spaceport.stages.train.render import camera_tensors
from spaceport.stages.train.sky import OPACITY as SKY_OPACITY
from spaceport.stages.train.sky import scene_up, sky_points
from spaceport.stages.train.stereo_init import stereo_points
from spaceport.stages.train.vignetting import LR as VIGNETTING_LR
from spaceport.stages.train.vignetting import Vignetting

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")
MCMC_REG = 0.01
"""Weight of the mean opacity and of the mean scale in the loss under gsplat's MCMC strategy."""
PHOTOMETRY_EVERY = 4
"""Steps between the ones that train the vignetting and the light (``Trainer.learns_photometry``)."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


@dataclass
class CappedStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy that stops growing at a Gaussian cap, and resets opacities as configured.

    gsplat 1.5.3 tests ``step % reset_every == 0 & step > 0``, which Python reads as a chained comparison
    with ``0 & step``: always false, so ``reset_every`` never resets anything (nerfstudio-project/gsplat
    PR #776, open). The reset is done here instead, where 3DGS does it: every ``reset_every`` steps while
    densification runs.
    """

    cap: int = 1_000_000

    def _grow_gs(self, params: Any, optimizers: Any, state: Any, step: int) -> tuple[int, int]:
        if len(params["means"]) >= self.cap:
            return 0, 0
        return super()._grow_gs(params, optimizers, state, step)

    def step_post_backward(self, params: Any, optimizers: Any, state: Any, step: int, info: dict[str, Any],
                           packed: bool = False) -> None:
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)


def with_random_points(pts: np.ndarray, cols: np.ndarray, count: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Add ``count`` points drawn uniformly in the box of the SfM points (1st to 99th percentile per axis),
    coloured as their nearest SfM point.

    SfM triangulates textured ground densely but leaves gaps where features are rare (plain roofs,
    walls): Gaussians cloned from the ground would have to travel metres to reach them, which a short run
    never does. Seeds in the gaps fix that; those in empty space fade and are pruned.
    """
    from scipy.spatial import cKDTree

    lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
    extra = rng.uniform(lo, hi, (count, 3))
    _, nearest = cKDTree(pts).query(extra)
    return np.concatenate([pts, extra]), np.concatenate([cols, cols[nearest]])


def half_size(view: View, cache: dict[str, View]) -> View:
    """``view`` at half its width and height (area-averaged photo), made once per view."""
    if view.camera.name not in cache:
        camera = view.camera.scaled(0.5)
        photo = torch.nn.functional.interpolate(view.image.permute(2, 0, 1)[None].float(),
                                                size=(camera.height, camera.width), mode="area")[0]
        cache[view.camera.name] = View(camera, photo.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8))
    return cache[view.camera.name]


def init_params(data: Dataset, options: TrainOptions, extent: float, device: str) -> dict[str, torch.nn.Parameter]:
    """Gaussians at the SfM points (and the random, stereo and sky seeds the options ask for): isotropic, sized by
    the distance to their nearest neighbours (sky seeds by their spacing)."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(options.seed)
    pts, cols = data.points, data.colors
    if options.init_random_points:
        pts, cols = with_random_points(pts, cols, options.init_random_points, rng)
    if options.init_stereo_points:
        # training views only: the held-out photos must not shape the model they evaluate
        extra, extra_cols = stereo_points(data.train or data.views, data.points, options.init_stereo_points, rng)
        pts, cols = np.concatenate([pts, extra]), np.concatenate([cols, extra_cols])
    sky, sky_cols, sky_size = (sky_points(data.train or data.views, data.points,
                                          scene_up(data.train or data.views, data.georef))
                               if options.sky == "auto" else (np.empty((0, 3)), np.empty((0, 3)), 0.0))
    room = max(options.max_gaussians - len(sky), options.max_gaussians // 2)  # the sky gets at most half the cap
    if len(sky) > options.max_gaussians - room:
        pick = np.sort(rng.choice(len(sky), options.max_gaussians - room, replace=False))
        sky, sky_cols = sky[pick], sky_cols[pick]
    if len(pts) > room:
        keep = np.sort(rng.choice(len(pts), room, replace=False))
        pts, cols = pts[keep], cols[keep]
    k = min(4, len(pts))
    dist, _ = cKDTree(pts).query(pts, k=k)
    mean_dist = np.sqrt((dist[:, 1:] ** 2).mean(1)) if k > 1 else np.full(len(pts), 0.01 * extent)
    mean_dist = np.concatenate([np.clip(mean_dist, 1e-4 * extent, 0.1 * extent), np.full(len(sky), sky_size)])
    opacity = np.concatenate([np.full(len(pts), 0.1), np.full(len(sky), SKY_OPACITY)])
    pts, cols = np.concatenate([pts, sky]), np.concatenate([cols, sky_cols])
    n = len(pts)
    sh_rest = (options.sh_degree + 1) ** 2 - 1
    values = {
        "means": torch.tensor(pts, dtype=torch.float32),
        "scales": torch.tensor(np.log(mean_dist), dtype=torch.float32)[:, None].repeat(1, 3),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "opacities": torch.tensor(np.log(opacity / (1 - opacity)), dtype=torch.float32),
        "sh0": torch.tensor((cols - 0.5) / SH_C0, dtype=torch.float32)[:, None, :],
        "shN": torch.zeros(n, sh_rest, 3),
    }
    return {k: torch.nn.Parameter(v.to(device)) for k, v in values.items()}


def scene_of(params: dict[str, torch.Tensor], antialiased: bool = False) -> GaussianScene:
    def a(name: str) -> np.ndarray:
        return params[name].detach().float().cpu().numpy().copy()

    return GaussianScene(a("means"), a("scales"), a("quats"), a("opacities"), a("sh0")[:, 0, :], a("shN"),
                         model="antialiased" if antialiased else "default")


def refine_steps(options: TrainOptions) -> list[int]:
    """The steps at which gsplat 1.5.3's strategies refine (DefaultStrategy: grow and prune; MCMC: relocate
    and add) under ``options``: ``start < step < until`` and ``step % every == 0``, for the steps the loop
    passes them, ``0 .. iterations - 1``. Empty when the schedule never reaches the window (a 300-step run
    densifying from 100 every 50 until 150 never refines: 150 is outside)."""
    start, until, every = options.densify_schedule()
    return [s for s in range(start + 1, min(until, options.iterations)) if s % every == 0]


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (nested dicts, lists) on the CPU: a checkpoint from either device."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_cpu(v) for v in value)
    return value


class Trainer:
    """Holds every piece of training state; ``state_dict``/``load_state_dict`` cover all of it, with every
    tensor on the CPU, so a checkpoint resumes on either device.

    How exactly a resumed run continues depends on the device. On CPU, bit for bit: the compiled
    compositor and projection sum gradients in a fixed order (tests/train/test_stage.py). On CUDA, within a
    tolerance only: gsplat's backward sums gradients with atomic adds, whose order varies run to run, so
    two runs from the same checkpoint drift apart in the last bits and densification may then decide a few
    Gaussians differently (tests/train/test_gpu.py states the tolerance). Across devices (a CPU checkpoint
    resumed on CUDA, or back), the same: the rasterizers agree to ~1e-3 per pixel, not bitwise."""

    def __init__(self, data: Dataset, options: TrainOptions, device: str, extent: float) -> None:
        self.data, self.options, self.device, self.extent = data, options, device, extent
        self.train_views = data.train or data.views
        self.eval_views = data.held_out
        self._half_views: dict[str, View] = {}  # derived from the views: not state, rebuilt on resume
        self.step = 0
        # gsplat's strategies draw from the global generator (split positions): seed it so that a run is
        # reproducible; a resumed run restores the generator from the checkpoint instead
        torch.manual_seed(options.seed)
        self.params = init_params(data, options, extent, device)
        self.strategy = self._make_strategy()
        self.strategy.check_sanity(self.params, self._make_optimizers())
        self.mcmc = not isinstance(self.strategy, CappedStrategy)
        self.strategy_state = (self.strategy.initialize_state() if self.mcmc
                               else self.strategy.initialize_state(scene_scale=extent))
        train_names, all_names = [v.camera.name for v in self.train_views], [v.camera.name for v in data.views]
        self.colour: PhotoColour | PhotoBilateralGrid | None = (
            None if options.appearance == "off"
            else PhotoBilateralGrid(train_names, all_names, options.appearance_lr, device)
            if options.appearance == "bilateral"
            else PhotoColour(train_names, all_names, options.appearance_lr, device, options.appearance))
        self.vignetting = (Vignetting([v.camera for v in data.views], VIGNETTING_LR, device)
                           if options.vignetting else None)
        self.light = DirectionalLight(LIGHT_LR, device) if options.directional_light else None
        seen = [data.observed.get(v.camera.name, np.zeros(0, np.int64)) for v in self.train_views]
        self.free_space = (FreeSpace([v.camera for v in self.train_views], data.points, seen, options.free_space_prune)
                           if options.free_space_prune else None)
        self.floaters_removed = 0
        self.loss = float("nan")
        self.last_psnr = float("nan")

    def _make_strategy(self) -> Any:
        o = self.options
        start, until, every = o.densify_schedule()
        if o.strategy == "mcmc":
            return DeviceMCMCStrategy(cap_max=o.max_gaussians, refine_start_iter=start, refine_stop_iter=until,
                                      refine_every=every)
        return CappedStrategy(cap=o.max_gaussians, refine_start_iter=start, refine_stop_iter=until,
                              refine_every=every, reset_every=o.opacity_reset_every,
                              grow_grad2d=o.densify_grad_threshold)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        o = self.options  # 3DGS's learning rates are the defaults; short runs (the demo) take larger ones
        lrs = {"means": o.position_lr * self.extent, "scales": o.scale_lr, "quats": o.rotation_lr,
               "opacities": o.opacity_lr, "sh0": o.color_lr, "shN": o.color_lr / 20}
        # fused Adam is ~7x faster than the default on CPU at 50k Gaussians
        self.optimizers = {k: torch.optim.Adam([{"params": self.params[k], "lr": lr, "name": k}], eps=1e-15,
                                               fused=True) for k, lr in lrs.items()}
        return self.optimizers

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "optimizers": {k: to_cpu(o.state_dict()) for k, o in self.optimizers.items()},
            "strategy": to_cpu(self.strategy_state),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.startswith("cuda") else torch.empty(0),
            "floaters_removed": self.floaters_removed,
        }
        if self.colour is not None:
            state["colour"] = to_cpu(self.colour.state_dict())
        if self.vignetting is not None:
            state["vignetting"] = to_cpu(self.vignetting.state_dict())
        if self.light is not None:
            state["light"] = to_cpu(self.light.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.params = {k: torch.nn.Parameter(v.to(self.device)) for k, v in state["params"].items()}
        self._make_optimizers()
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.strategy_state = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                               for k, v in state["strategy"].items()}
        self.floaters_removed = int(state.get("floaters_removed", 0))
        if self.colour is not None:
            self.colour.load_state_dict(state["colour"])
        if self.vignetting is not None:
            self.vignetting.load_state_dict(state["vignetting"])
        if self.light is not None:
            self.light.load_state_dict(state["light"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.startswith("cuda") and len(state["cuda_rng"]):
            torch.cuda.set_rng_state(state["cuda_rng"])

    # --- one step ------------------------------------------------------------------------------
    def sh_degree_now(self) -> int:
        return min(self.options.sh_degree, self.step // self.options.sh_degree_interval)

    def view_for(self, step: int) -> View:
        n = len(self.train_views)
        epoch, pos = divmod(step, n)
        order = np.random.default_rng([self.options.seed, epoch]).permutation(n)
        view = self.train_views[order[pos]]
        return half_size(view, self._half_views) if step < self.options.half_resolution_steps else view

    def render(self, view: View, sh_degree: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The splats alone from ``view``'s camera: image over black, alpha, info."""
        p = self.params
        viewmat, K = camera_tensors(view.camera, self.device)
        sh = torch.cat([p["sh0"], p["shN"]], 1)
        return rasterize(p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]), sh,
                         viewmat, K, view.camera.width, view.camera.height,
                         self.sh_degree_now() if sh_degree is None else sh_degree,
                         antialiased=self.options.antialiased)

    def as_photographed(self, image: torch.Tensor, view: View, mode: str = "identity") -> torch.Tensor:
        """``image`` as the photo was taken: in the scene's directional light, through its camera's vignetting and
        its own colour transform for a training photo; for a held-out one none (the splats alone, as a viewer
        shows them), its neighbours' colour transform (``mode="neighbours"``), its camera's vignetting
        (``mode="vignetted"``) or the light and the vignetting, both learned from the training photos only
        (``mode="photographed"``)."""
        held_out = view.camera.held_out
        if held_out and mode == "neighbours" and self.colour is not None:
            return self.colour.apply_held_out(image, view.camera.name, mode)
        gain = None  # one [H, W, 1] product of the gains: the image is multiplied once
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.learns_photometry()):
            if self.light is not None and (not held_out or mode == "photographed"):
                gain = self.light.gain(view.camera)
            if self.vignetting is not None and (not held_out or mode in ("photographed", "vignetted")):
                vignette = self.vignetting.gain(view.camera)
                gain = vignette if gain is None else gain * vignette
        if gain is not None:
            image = image * gain
        return image if held_out or self.colour is None else self.colour.apply(image, view.camera.name)

    def learns_photometry(self) -> bool:
        """Whether this step trains the vignetting and the light. They are a few numbers that the whole flight
        pins down, and their gradient (a sum over every pixel and channel) cost ~15 ms a full-size step:
        every ``PHOTOMETRY_EVERY``-th step, the others use them as they are."""
        return self.step % PHOTOMETRY_EVERY == 0

    def target(self, view: View) -> torch.Tensor:
        return view.image.to(self.device).float() / 255.0

    def train_step(self) -> float:
        o = self.options
        view = self.view_for(self.step)
        gamma = 0.01 ** (min(self.step, o.iterations) / o.iterations)
        self.optimizers["means"].param_groups[0]["lr"] = o.position_lr * self.extent * gamma
        image, alpha, info = self.render(view)
        if not self.mcmc:
            self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, self.step, info)
        if o.random_background:  # drawn from the global generator, which checkpoints save
            image = image + (1.0 - alpha)[..., None] * torch.rand(3).to(image.device)
        image = self.as_photographed(image, view)
        gt = self.target(view)
        loss = (1 - o.ssim_weight) * (image - gt).abs().mean() + o.ssim_weight * (1 - ssim(image, gt))
        if o.mse_weight:
            loss = loss + o.mse_weight * ((image - gt) ** 2).mean()
        # MCMC's relocation relies on its own regularisers pushing unused Gaussians to low opacity and scale
        opacity_weight = o.opacity_reg + (MCMC_REG if self.mcmc else 0.0)
        if opacity_weight:
            loss = loss + opacity_weight * torch.sigmoid(self.params["opacities"]).mean()
        if self.mcmc:
            loss = loss + MCMC_REG * torch.exp(self.params["scales"]).mean()
        if self.colour is not None:
            loss = loss + self.colour.penalty(view.camera.name)
        if self.vignetting is not None and self.learns_photometry():
            loss = loss + self.vignetting.penalty(view.camera)
        if self.light is not None and self.learns_photometry():
            loss = loss + self.light.penalty()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {float(loss.detach())} at step {self.step}")
        loss.backward()
        for opt in self.optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.colour is not None:
            self.colour.step()
        if self.vignetting is not None:
            self.vignetting.step()
        if self.light is not None:
            self.light.step()
        if not self.mcmc:
            self.strategy.step_post_backward(self.params, self.optimizers, self.strategy_state, self.step, info,
                                             packed=False)
            self._enforce_cap()
        else:
            lr = self.optimizers["means"].param_groups[0]["lr"]
            self.strategy.step_post_backward(self.params, self.optimizers, self.strategy_state, self.step, info, lr=lr)
        if self.free_space is not None and self._prune_floaters_now():
            self.prune_floaters()
        if o.max_elongation:
            limit_elongation(self.params["scales"], o.max_elongation)
        self.step += 1
        self.loss = float(loss.detach())
        self.last_psnr = psnr(image.detach(), gt)
        return self.loss

    def _prune_floaters_now(self) -> bool:
        """Every 100 steps (at least every densification pass) while densifying, and at the last step."""
        start, until, every = self.options.densify_schedule()
        s = self.step
        return (start <= s <= until and s % max(every, 100) == 0) or s == self.options.iterations - 1

    def prune_floaters(self) -> int:
        """Remove (MCMC: fade, for relocation) the Gaussians in a camera's free space (floaters.py)."""
        if self.free_space is None:
            return 0
        mask = self.free_space.mask(self.params["means"].detach())
        count = int(mask.sum())
        if count:
            if self.mcmc:
                with torch.no_grad():
                    self.params["opacities"][mask] = math.log(1e-4)
            else:
                remove(self.params, self.optimizers, self.strategy_state, mask)
        self.floaters_removed += count
        return count

    def _enforce_cap(self) -> None:
        extra = len(self.params["means"]) - self.options.max_gaussians
        if extra > 0:
            weakest = torch.argsort(self.params["opacities"].detach())[:extra]
            mask = torch.zeros(len(self.params["means"]), dtype=torch.bool, device=self.params["means"].device)
            mask[weakest] = True
            remove(self.params, self.optimizers, self.strategy_state, mask)

    @torch.no_grad()
    def evaluate(self, views: list[View] | None = None, lpips: LpipsScore | None = None,
                 colour: str = "identity") -> tuple[float, float, float | None]:
        """Mean PSNR, SSIM and (given a scorer) LPIPS over held-out views (training views when none are
        held out), each view rendered once; held-out views as the splats alone render them, or through
        their capture-order neighbours' colour transforms (``colour="neighbours"``) or their camera's
        vignetting (``colour="vignetted"``)."""
        views = views or self.eval_views or self.train_views
        scores = []
        for view in views:
            image = self.as_photographed(self.render(view)[0], view, colour)
            gt = self.target(view)
            scores.append((psnr(image, gt), float(ssim(image.clamp(0, 1), gt)),
                           lpips(image, gt) if lpips is not None else 0.0))
        means = np.mean(np.array(scores), axis=0)
        return float(means[0]), float(means[1]), float(means[2]) if lpips is not None else None

    def scene(self) -> GaussianScene:
        return scene_of(self.params, self.options.antialiased)


def train(trainer: Trainer, *, until: int, on_step: Callable[[Trainer], bool]) -> None:
    """Step until ``until``; ``on_step`` runs after every step and returns False to stop early."""
    while trainer.step < until:
        trainer.train_step()
        if not on_step(trainer):
            return


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0
