"""Compile the CPU training kernels into numba's on-disk cache in a child process.

numba's machine code for the same kernel differs in the last bits between a process that compiles it
and one that loads it from the on-disk cache (measured: a 20k-Gaussian render, SSIM loss and gradients
hash one way in every compiling process and another way in every loading one; numba/numba#10617
reports the same two kinds of code). Training is chaotic, so a run interrupted in the process that
compiled and resumed in one that loads would continue from the right state with different arithmetic:
up to ~0.8 dB apart on the demo, not the same run.

So the train stage does not compile the kernels in its own process: when the process holds none yet, a
child process (this module, ``python -m``) trains four tiny steps, which compiles every kernel with the
argument types of training and writes the cache, and the stage then loads them from there like every
later run does. With a warm cache the child only loads (~6 s). Where numba cannot write a cache, every
process compiles for itself (the child's compile is then wasted), which is consistent as well.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import torch

from spaceport.api import TrainOptions
from spaceport.stages.train import rasterizer_cpu
from spaceport.stages.train.data import Dataset, View
from spaceport.stages.train.render import Camera

log = logging.getLogger(__name__)


def tiny_dataset() -> Dataset:
    """Four 32x24 views of a random point cloud: every code path of a CPU step, in milliseconds."""

    rng = np.random.default_rng(0)
    views = []
    for i in range(4):
        w2c = np.eye(4)
        w2c[0, 3] = 0.1 * i
        camera = Camera(f"v{i}.png", 32, 24, 30.0, 30.0, 16.0, 12.0, w2c, held_out=i == 0)
        views.append(View(camera, torch.from_numpy(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))))
    points = rng.uniform([-1, -1, 3], [1, 1, 5], (200, 3))
    return Dataset(views, points, rng.uniform(0, 1, (200, 3)).astype(np.float32), None)


def compile_kernels() -> None:
    """Run the training loop's kernels once each: half- and full-size steps, with densification, and an
    evaluation."""
    from spaceport.stages.train.loop import Trainer

    torch.set_num_threads(1)  # as the stage runs them
    options = TrainOptions.model_validate({"iterations": 4, "halfResolutionSteps": 1, "shDegree": 1,
                                           "shDegreeInterval": 1, "densifyFrom": 1, "densifyEvery": 1})
    trainer = Trainer(tiny_dataset(), options, "cpu", 1.0)
    while trainer.step < options.iterations:
        trainer.train_step()
    trainer.evaluate()


class Precompile:
    """The child process, started early so that it compiles while the stage loads its inputs; ``wait()``
    before the first kernel runs. Nothing is started when this process already holds the kernels."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[str] | None = None
        if not rasterizer_cpu.composite_forward.signatures:  # else this process has them, however they came
            self.child = subprocess.Popen([sys.executable, "-m", __name__], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True)

    def wait(self) -> None:
        if self.child is None:
            return
        _, err = self.child.communicate()
        if self.child.returncode != 0:
            log.warning("precompiling the CPU kernels in a child process failed (exit %d); compiling here, so "
                        "a run resumed later may differ in the last bits: %s", self.child.returncode, err[-2000:])
        self.child = None

    def cancel(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child.communicate()
            self.child = None


if __name__ == "__main__":
    compile_kernels()
