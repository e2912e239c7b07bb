"""A run stopped in a process that found numba's cache empty resumes bit for bit in a later process.

Separate processes, a fresh cache: the first one is where kernels would otherwise be compiled in-process
and the later ones load them from the cache, which gives different last bits (see precompile.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.train.fixtures import write_sfm_output

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
from spaceport.contract import RetryableError
from spaceport.stages.runner import run_stage
from spaceport.stages.train import precompile, project_cpu, rasterizer_cpu, ssim_cpu, tile_binning
from tests.train.test_stage import FAST, sigterm_at

sfm, out, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = {"iterations": 60, "checkpointEvery": 20, **FAST}
try:
    metrics = run_stage("train", sfm, out, config, listener=sigterm_at(stop_at) if stop_at else None).metrics
except RetryableError as e:
    metrics = {"stopped": str(e)}
stats = [f.stats for m in (rasterizer_cpu, project_cpu, tile_binning, ssim_cpu)
         for f in vars(m).values() if hasattr(f, "stats") and hasattr(f, "signatures")]
metrics["cacheHits"] = sum(sum(s.cache_hits.values()) for s in stats)
metrics["compiledHere"] = sum(sum(s.cache_misses.values()) for s in stats)
print(json.dumps(metrics))
"""


def run_child(sfm: Path, out: Path, cache: Path, stop_at: int = 0) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(sfm), str(out), str(stop_at)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_run_stopped_on_a_cold_cache_resumes_exactly(tmp_path: Path) -> None:
    write_sfm_output(tmp_path / "sfm")
    cache = tmp_path / "numba"
    first = run_child(tmp_path / "sfm", tmp_path / "a", cache, stop_at=30)
    assert "step 30" in first["stopped"]
    # the kernels were compiled by the stage's child process, and this one loaded them like later ones
    assert first["compiledHere"] == 0 and first["cacheHits"] > 10, first
    resumed = run_child(tmp_path / "sfm", tmp_path / "a", cache)
    straight = run_child(tmp_path / "sfm", tmp_path / "b", cache)
    assert resumed["resumedFromStep"] == 30 and "resumedFromStep" not in straight
    assert resumed["compiledHere"] == straight["compiledHere"] == 0
    assert (tmp_path / "a" / "splats.ply").read_bytes() == (tmp_path / "b" / "splats.ply").read_bytes()
