"""Options of the training stage (3D Gaussian Splatting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spaceport.api.common import ApiModel


class TrainOptions(ApiModel):
    """How the sparse model becomes a trained splat scene."""

    iterations: int = Field(default=7000, ge=1, le=1_000_000, description="Optimisation steps.")
    max_gaussians: int = Field(default=1_000_000, ge=1000, description="Cap on the number of Gaussians.")
    sh_degree: int = Field(default=3, ge=0, le=3, description="Spherical-harmonics degree of colour.")
    sh_degree_interval: int = Field(
        default=1000, ge=1, le=1_000_000, description="Steps between raising the SH degree by one, up to shDegree."
    )
    checkpoint_every: int = Field(default=1000, ge=1, description="Steps between checkpoints.")
    holdout_every: int = Field(
        default=8, ge=0, description="Every Nth photo is held out, counted over all the photos SfM used "
                                     "(registered or not), so one that fails to register does not change which "
                                     "others are (0: none).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    downscale: float = Field(
        default=1.0, ge=1.0, le=32.0, description="Divide image width and height by this factor before training."
    )
    strategy: Literal["default", "mcmc"] = Field(
        default="default",
        description="Densification: gsplat's default (clone/split/prune) or MCMC (relocation of faded Gaussians, "
                    "growth to maxGaussians, position noise), on either device.",
    )
    densify_from: int | None = Field(
        default=None, ge=0, description="Step at which densification starts; default: min(500, iterations / 10)."
    )
    densify_until: int | None = Field(
        default=None, ge=0, description="Step at which densification stops; default: half of iterations."
    )
    densify_every: int | None = Field(
        default=None, ge=1, le=100_000,
        description="Steps between densification passes; default: iterations / 50, within 10..100.",
    )
    densify_grad_threshold: float = Field(
        default=0.0002, gt=0, le=1.0, description="Mean screen-space gradient (NDC units) above which a Gaussian grows."
    )
    opacity_reset_every: int = Field(default=3000, ge=1, description="Steps between opacity resets.")
    init_random_points: int = Field(
        default=0, ge=0, le=10_000_000,
        description="Extra initial Gaussians placed at random in the box of the SfM points (fills gaps in the "
                    "sparse model such as plain roofs).",
    )
    init_stereo_points: int = Field(
        default=0, ge=0, le=10_000_000,
        description="Extra initial Gaussians from plane-sweep stereo on the training views (low resolution): "
                    "dense seeds on surfaces the sparse model misses, coloured from the photos.",
    )
    ssim_weight: float = Field(
        default=0.2, ge=0, le=1, description="Weight of (1 - SSIM) in the loss; L1 gets the rest."
    )
    mse_weight: float = Field(
        default=0.0, ge=0, le=1000.0,
        description="Weight of the mean squared colour error (colours 0..1) added to the loss (0: off, as in 3DGS). "
                    "PSNR is measured from it, and L1 alone gives the few large errors along edges little weight "
                    "(the demo: 10, +0.4 dB held-out on average).",
    )
    position_lr: float = Field(
        default=1.6e-4, gt=0, le=1.0,
        description="Initial learning rate of positions, in scene radii per step (decays 100x over the run).",
    )
    half_resolution_steps: int = Field(
        default=0, ge=0, le=1_000_000,
        description="Steps trained at half the image width and height before the full size (0: none). They cost "
                    "about a third of a full step and shape the coarse structure as well (measured on the demo: "
                    "1000 of 2000 steps at half size, same held-out PSNR in half the time).",
    )
    color_lr: float = Field(
        default=2.5e-3, gt=0, le=1.0,
        description="Learning rate of the base colour (SH degree 0); the higher SH bands get a twentieth of it.",
    )
    opacity_lr: float = Field(default=5e-2, gt=0, le=10.0, description="Learning rate of opacities (logits).")
    scale_lr: float = Field(default=5e-3, gt=0, le=1.0, description="Learning rate of scales (log metres).")
    rotation_lr: float = Field(default=1e-3, gt=0, le=1.0, description="Learning rate of rotations (quaternions).")
    opacity_reg: float = Field(
        default=0.0, ge=0, le=1.0,
        description="Weight of the mean opacity in the loss (0: off). It fades Gaussians the photos do not need, "
                    "so pruning removes them: fewer semi-transparent floaters in views between the photos "
                    "(the demo: 0.01). The MCMC strategy adds its own 0.01 on top.",
    )
    antialiased: bool = Field(
        default=False,
        description="Train for antialiased rendering (Mip-Splatting's 2D filter: gsplat's antialiased mode on CUDA, "
                    "the same maths on CPU). The outputs say so (PLY comment, SOG meta.json model), so viewers "
                    "render the splats as they were trained.",
    )
    appearance: Literal["off", "exposure", "affine", "bilateral"] = Field(
        default="off",
        description="Per-photo colour transform learned with the scene, to absorb exposure and white-balance "
                    "differences between photos: 'exposure' a gain and an offset per channel, 'affine' a 3x3 matrix "
                    "and an offset, 'bilateral' a grid of affine transforms over the photo and its brightness "
                    "(local tone mapping; gsplat's bilateral grid, on both devices). Held-out "
                    "photos are never fitted: the headline PSNR renders the splats alone.",
    )
    appearance_lr: float = Field(
        default=2e-3, gt=0, le=1.0, description="Learning rate of the per-photo colour transforms."
    )
    random_background: bool = Field(
        default=False,
        description="Composite each training render over a random colour: transparency can then explain nothing "
                    "in the photos, so what lies beyond the reconstructed geometry is not learned as haze.",
    )
    vignetting: bool = Field(
        default=True,
        description="Learn each camera's lens vignetting (a radial fall-off of brightness towards the corners, shared "
                    "by the photos of one camera) with the scene, so that it is not learned as haze and floaters; "
                    "the splats keep an average photo's colours. A camera without vignetting learns none.",
    )
    directional_light: bool = Field(
        default=False,
        description="Learn a brightness gain per world direction, shared by the whole scene (the bright halo around "
                    "the point opposite the sun in aerial photos moves with the camera), so that it is not learned as "
                    "haze and floaters; the splats keep the photos' average brightness, constant light learns none. "
                    "Off by default: on a real survey the render through it matched held-out photos better "
                    "(psnrPhotographed), the splats alone worse.",
    )
    sky: Literal["auto", "off"] = Field(
        default="auto",
        description="Seed a shell of Gaussians far beyond the scene where the training photos look above the "
                    "horizon (photos from the ground), coloured from the photos, so that the sky is not learned as "
                    "haze in front of the scene. 'auto' seeds it when over 2% of the photos' pixels look above the "
                    "horizon (none for a nadir survey); 'off' never.",
    )
    max_elongation: float = Field(
        default=0.0, ge=0, le=1000.0,
        description="Longest axis of a Gaussian at most this many times its middle one (0: no bound). Needle-like "
                    "Gaussians that fit a few photos draw streaks across the others; flat ones, which surfaces need, "
                    "are not affected.",
    )
    free_space_prune: float = Field(
        default=0.0, ge=0, lt=1,
        description="Remove Gaussians that lie, in a training photo, nearer than this fraction of the depth of the "
                    "surfaces SfM observed in that direction (space the photo saw through: floaters). Applied while "
                    "densifying and before the scene is written (0: off).",
    )
    max_image_size: int | None = Field(
        default=None, ge=16, le=16384,
        description="Longest side, in pixels, at which training runs; larger images are decoded reduced (JPEG "
                    "DCT scaling) and resized, never held at full size (default: the SfM images' size).",
    )
    eval_every: int = Field(
        default=0, ge=0, description="Steps between held-out evaluations in progress messages (0: only at the end)."
    )
    def densify_schedule(self) -> tuple[int, int, int]:
        """(from, until, every) in steps: explicit values, else 3DGS's schedule scaled down for short runs
        (its fixed start at step 500 and passes every 100 steps barely densify a run of 1000 steps)."""
        start = self.densify_from if self.densify_from is not None else min(500, self.iterations // 10)
        until = self.densify_until if self.densify_until is not None else self.iterations // 2
        every = self.densify_every if self.densify_every is not None else min(100, max(10, self.iterations // 50))
        return start, until, every

    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed (view order, densification).")
    blocks: int = Field(
        default=0, ge=0, le=256,
        description="Spatial blocks trained separately and merged (partitioned training, one Job index per block): "
                    "0 picks from the SfM model (one block up to blockMaxImages registered photos, else enough "
                    "blocks that each holds about that many), 1 never partitions, 2 and more that many.",
    )
    block_max_images: int = Field(
        default=1000, ge=8, le=1_000_000,
        description="With blocks 0: the most registered photos trained as one block. Each photo is seen "
                    "iterations / photos times, and a block's photos are held in memory.",
    )
    block_overlap: float = Field(
        default=0.25, ge=0, le=1.0,
        description="Each block trains on the photos and SfM points of its region widened by this fraction of its "
                    "size on every side; the merge keeps only the Gaussians inside each block's own region.",
    )

    def block_count(self, registered_images: int) -> int:
        """How many blocks a model of ``registered_images`` photos is trained in (1: not partitioned)."""
        if self.blocks:
            return self.blocks
        return max(1, -(-registered_images // self.block_max_images))
