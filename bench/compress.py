"""Compression benchmark: our SOG encoder vs @playcanvas/splat-transform on the same PLY, in one run.

    .venv/bin/python bench/compress.py [--compare 15000] [--scale 100000,1000000] [--ply trained.ply]

1. Side by side on one scene (synthetic SH3 unless --ply): wall time, peak memory, .sog size and the
   round-trip error per attribute of each file, both decoded by splat-transform (the independent reader)
   and matched to the input splat by position. Same k-means iterations on both sides.
2. PLAS vs Morton: total v2 bytes of each ordering on the same scene (our encoder, ordering=auto).
3. Ours alone on bigger scenes (splat-transform needs ~31 min at 100k here): time and peak memory.

Every encoder run is a child process, so its time and peak RSS (os.wait4) are its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spaceport.splats import GaussianScene, read_ply, write_ply  # noqa: E402
from spaceport.stages.compress.attributes import sigmoid  # noqa: E402
from spaceport.stages.compress.palette import colour_rmse  # noqa: E402
from spaceport.stages.compress.synthetic import synthetic_scene  # noqa: E402

SPLAT_TRANSFORM = ROOT / "node_modules" / ".bin" / "splat-transform"
SH_C0 = 0.28209479177387814


NUMBA_CACHE = Path(tempfile.mkdtemp(prefix="bench-numba-"))
"""Starts empty, so the first run of ours pays numba's compile (as a fresh container would)."""


def ours(ply: Path, out: Path, config: dict[str, Any], threads: int) -> tuple[float, float, dict[str, Any]]:
    """Our stage in a child process: (seconds, peak MB, metrics)."""
    ply_dir = ply.parent
    code = ("import json,resource,sys; from spaceport.stages.runner import run_stage; "
            "r=run_stage('compress', sys.argv[1], sys.argv[2], json.loads(sys.argv[3])); "
            "print(json.dumps({'metrics': r.metrics, 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    env = {"NUMBA_CACHE_DIR": str(NUMBA_CACHE), **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(ply_dir), str(out), json.dumps(config)],
                          capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"our stage failed: {proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, data["rss"] / 1024, data["metrics"]


def splat_transform(ply: Path, out: Path, iterations: int) -> tuple[float, float]:
    cmd = [str(SPLAT_TRANSFORM), "-g", "cpu", "-q", "-w", "-i", str(iterations), str(ply), str(out)]
    t = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"splat-transform failed: {out.with_suffix('.log').read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def decode(sog: Path, tmp: Path) -> GaussianScene:
    out = tmp / f"rt-{sog.parent.name}.ply"
    subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", "-q", "-w", str(sog), str(out)], check=True,
                   capture_output=True)
    return read_ply(out)


def errors(decoded: GaussianScene, scene: GaussianScene) -> dict[str, float]:
    """Round-trip error per attribute, each decoded splat against the input splat nearest to it."""
    _, idx = cKDTree(scene.means.astype(np.float64)).query(decoded.means.astype(np.float64))
    ref = scene.subset(idx)
    diag = float(np.linalg.norm(scene.means.max(0) - scene.means.min(0)))
    pos = np.linalg.norm(decoded.means - ref.means, axis=1) / diag
    qa = ref.quats / np.linalg.norm(ref.quats, axis=1, keepdims=True)
    qb = decoded.quats / np.linalg.norm(decoded.quats, axis=1, keepdims=True)
    ang = np.degrees(2 * np.arccos(np.clip(np.abs((qa * qb).sum(1)), 0, 1)))
    col = np.abs(decoded.sh0 - ref.sh0) * SH_C0
    sh_err = float(((decoded.shN - ref.shN) ** 2).sum()) if ref.shN.size else 0.0
    sh_std = float(np.sqrt(((ref.shN - ref.shN.mean(0)) ** 2).sum() / max(ref.shN.size, 1)))
    sh_rmse = float(np.sqrt(sh_err / max(ref.shN.size, 1)))
    return {
        "matched unique": len(np.unique(idx)) / len(idx),
        "position/diag median": float(np.median(pos)),
        "position/diag max": float(pos.max()),
        "log-scale median": float(np.median(np.abs(decoded.scales - ref.scales))),
        "log-scale max": float(np.abs(decoded.scales - ref.scales).max()),
        "colour median": float(np.median(col)),
        "colour max": float(col.max()),
        "opacity max": float(np.abs(sigmoid(decoded.opacities) - sigmoid(ref.opacities)).max()),
        "rotation median deg": float(np.median(ang)),
        "rotation max deg": float(ang.max()),
        "SH-rest RMSE/std": sh_rmse / sh_std if sh_std else 0.0,
        "SH-rest colour RMSE": colour_rmse(sh_err, ref.count),
    }


def fmt(v: float) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", type=int, default=15000, help="splats of the side-by-side scene")
    p.add_argument("--scale", default="100000,1000000", help="sizes timed for ours alone ('' for none)")
    p.add_argument("--ply", type=Path, help="a trained scene to compare on instead of a synthetic one")
    p.add_argument("--iterations", type=int, default=10, help="k-means iterations, both encoders")
    p.add_argument("--threads", type=int, default=0, help="torch threads for ours (0: torch's default)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    cfg = {"kmeansIterations": args.iterations, "formats": ["sog"], "qualityViews": 0}

    (tmp / "in").mkdir()
    scene = read_ply(args.ply) if args.ply else synthetic_scene(args.compare, 3, seed=0)
    write_ply(scene, tmp / "in" / "splats.ply")
    ply = tmp / "in" / "splats.ply"
    label = args.ply.name if args.ply else f"synthetic {scene.count} splats SH{scene.sh_degree}"
    print(f"scene: {label}, PLY {ply.stat().st_size / 1e6:.2f} MB; k-means iterations {args.iterations}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)

    cold, _, _ = ours(ply, tmp / "ours-cold", {**cfg, "ordering": "morton"}, args.threads)
    o_wall, o_rss, o_m = ours(ply, tmp / "ours", {**cfg, "ordering": "morton"}, args.threads)
    print(f"ours: {cold:.1f} s cold (numba compiles its kernels), {o_wall:.1f} s warm", flush=True)
    (tmp / "theirs").mkdir()
    t_wall, t_rss = splat_transform(ply, tmp / "theirs" / "scene.sog", args.iterations)
    print(f"splat-transform: {t_wall:.1f} s", flush=True)
    o_size, t_size = (tmp / "ours" / "scene.sog").stat().st_size, (tmp / "theirs" / "scene.sog").stat().st_size
    e_ours, e_theirs = errors(decode(tmp / "ours" / "scene.sog", tmp), scene), \
        errors(decode(tmp / "theirs" / "scene.sog", tmp), scene)

    rows = [("wall time s", o_wall, t_wall), ("peak memory MB", o_rss, t_rss), (".sog bytes", o_size, t_size),
            ("ratio vs PLY", ply.stat().st_size / o_size, ply.stat().st_size / t_size)]
    rows += [(k, e_ours[k], e_theirs[k]) for k in e_ours]
    print(f"\n| {'metric':24} | {'ours':>10} | {'splat-transform':>15} | {'ours/theirs':>11} |")
    print(f"|{'-' * 26}|{'-' * 12}|{'-' * 17}|{'-' * 13}|")
    for name, a, b in rows:
        ratio = a / b if b else float("nan")
        print(f"| {name:24} | {fmt(float(a)):>10} | {fmt(float(b)):>15} | {fmt(ratio):>11} |")
    print(f"\nspeed-up: {t_wall / o_wall:.1f}x warm, {t_wall / cold:.1f}x cold; "
          f"ours palette {o_m.get('shPaletteSize')} entries "
          f"(colour error {o_m.get('shPaletteColourError')}), splat-transform's rule gives "
          f"{min(64, 2 ** int(np.log2(max(scene.count, 1024) / 1024))) * 1024}")
    print(f"ours per-file bytes: {o_m['sogFileBytes']}")

    _, _, auto_m = ours(ply, tmp / "auto", {**cfg, "ordering": "auto"}, args.threads)
    sizes = auto_m["orderingBytes"]
    print(f"\nPLAS vs Morton (v2 bytes): morton {sizes['morton']}, plas {sizes['plas']} "
          f"(plas/morton {sizes['plas'] / sizes['morton']:.3f}); PLAS sort+encode "
          f"{auto_m['durations']['plasSeconds']:.1f} s vs Morton {auto_m['durations']['mortonSeconds']:.1f} s")

    for n in [int(s) for s in args.scale.split(",") if s]:
        d = tmp / f"scale{n}"
        (d / "in").mkdir(parents=True)
        big = synthetic_scene(n, 3, seed=1)
        write_ply(big, d / "in" / "splats.ply")
        del big
        wall, rss, m = ours(d / "in" / "splats.ply", d / "out", {**cfg, "ordering": "morton"}, args.threads)
        print(f"\nours alone, {n} splats SH3: {wall:.1f} s wall (stage {m['durations']['totalSeconds']:.1f} s), "
              f"peak {rss:.0f} MB, .sog {m['sogBytes'] / 1e6:.2f} MB (ratio {m['compressionRatio']:.1f}x), "
              f"palette {m.get('shPaletteSize')}; {json.dumps(m['durations'])}", flush=True)


if __name__ == "__main__":
    main()
