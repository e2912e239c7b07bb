"""Compression benchmark: our SOG encoder vs @playcanvas/splat-transform on the same PLY, in one run.

    .venv/bin/python bench/compress.py [--compare 15000] [--scale 100000,1000000] [--ply trained.ply]
    .venv/bin/python bench/compress.py --compare 100000 --scale ''    # the issue's 100k side by side

1. Side by side on one scene (synthetic SH3 unless --ply): wall and CPU seconds, peak memory, .sog size
   and the round-trip error per attribute of each file, both decoded by splat-transform (the independent
   reader) and matched to the input splat by position. Same k-means iterations on both sides; both are
   child processes started the same way, so start-up (Node, Python) counts on both sides.
2. PLAS vs Morton: total v2 bytes of each ordering on the same scene (our encoder, ordering=auto).
3. Ours alone on bigger scenes (splat-transform needs ~31 min at 100k here): time and peak memory.

splat-transform's runs are cached in bench/results/ by the PLY's hash, the iterations and its version
(a 100k run takes half an hour of one core), with the machine that ran it: ``--fresh`` runs it again. The
table says which it used; a cached run from another machine gives no same-machine ratio (the JSON record's
``reference.sameMachine``). ``--smoke``: 500 splats, 2 iterations, splat-transform run afresh (seconds).
The last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import add_smoke_flag, emit, machine, same_machine  # noqa: E402

from spaceport.splats import GaussianScene, read_ply, write_ply  # noqa: E402
from spaceport.stages.compress.attributes import sigmoid  # noqa: E402
from spaceport.stages.compress.palette import colour_rmse, splat_transform_size  # noqa: E402
from spaceport.stages.compress.synthetic import synthetic_scene  # noqa: E402

SPLAT_TRANSFORM = ROOT / "node_modules" / ".bin" / "splat-transform"
CACHE = ROOT / "bench" / "results" / "splat-transform"
SH_C0 = 0.28209479177387814


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system CPU-seconds of the child (and its own children)
    rss_mb: float  # the child's peak resident memory
    cached: str = ""  # when the run came from the cache: the date it ran
    machine: dict[str, Any] | None = None  # where it ran (bench/record.py); None for runs cached before that


def child(cmd: list[str], env: dict[str, str], log: Path) -> tuple[Run, str]:
    """Run a command as a child process: its wall time, its own CPU time and peak RSS (os.wait4)."""
    t = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **env}, text=True)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{cmd[0]} failed: {log.read_text()[-3000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024), out


def thread_env(threads: int) -> dict[str, str]:
    """Thread caps for BLAS (numpy's OpenBLAS), OpenMP and torch: 0 leaves the libraries' defaults."""
    if not threads:
        return {}
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def ours(ply: Path, out: Path, config: dict[str, Any], threads: int) -> tuple[Run, dict[str, Any]]:
    """Our stage in a child process, exactly as a Job runs it: (run, metrics)."""
    code = ("import json,sys; from spaceport.stages.runner import run_stage; "
            "r=run_stage('compress', sys.argv[1], sys.argv[2], json.loads(sys.argv[3])); "
            "print(json.dumps(r.metrics))")
    out.mkdir(parents=True, exist_ok=True)
    run, stdout = child([sys.executable, "-c", code, str(ply.parent), str(out), json.dumps(config)],
                        thread_env(threads), out.parent / f"{out.name}.log")
    return run, json.loads(stdout.strip().splitlines()[-1])


def splat_transform_version() -> str:
    package = ROOT / "node_modules" / "@playcanvas" / "splat-transform" / "package.json"
    return str(json.loads(package.read_text())["version"])


def splat_transform(ply: Path, out: Path, iterations: int, fresh: bool, cache: Path | None = CACHE) -> Run:
    """splat-transform -g cpu on the PLY, or its cached run on the same bytes, iterations and version.

    ``cache=None`` neither reads nor writes the cache."""
    digest = hashlib.sha256(ply.read_bytes()).hexdigest()[:16]
    entry = cache / f"{digest}-i{iterations}-v{splat_transform_version()}" if cache else None
    if entry and not fresh and (entry / "run.json").is_file() and (entry / "scene.sog").is_file():
        shutil.copy(entry / "scene.sog", out)
        return Run(**json.loads((entry / "run.json").read_text()))
    cmd = [str(SPLAT_TRANSFORM), "-g", "cpu", "-q", "-w", "-i", str(iterations), str(ply), str(out)]
    run, _ = child(cmd, {}, out.with_suffix(".log"))
    run.machine = machine()
    if entry:
        entry.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, entry / "scene.sog")
        (entry / "run.json").write_text(json.dumps({**asdict(run), "cached": time.strftime("%Y-%m-%d %H:%M")}))
    return run


def decode(sog: Path, tmp: Path) -> GaussianScene:
    out = tmp / f"rt-{sog.parent.name}.ply"
    subprocess.run([str(SPLAT_TRANSFORM), "-g", "cpu", "-q", "-w", str(sog), str(out)], check=True,
                   capture_output=True)
    return read_ply(out)


def errors(decoded: GaussianScene, scene: GaussianScene) -> dict[str, float]:
    """Round-trip error per attribute, each decoded splat against the input splat nearest to it.

    Splats whose nearest input splat is also another's nearest are left out: input pairs ~1 mm apart
    swap under position quantisation (4 of 100k with splat-transform's truncation), and their "error"
    would be the difference between two unrelated splats (log-scale 1.2, rotation 175°).
    """
    _, idx = cKDTree(scene.means.astype(np.float64)).query(decoded.means.astype(np.float64))
    unique = np.bincount(idx, minlength=scene.count)[idx] == 1
    decoded, idx = decoded.subset(unique), idx[unique]
    ref = scene.subset(idx)
    diag = float(np.linalg.norm(scene.means.max(0) - scene.means.min(0)))
    pos = np.linalg.norm(decoded.means - ref.means, axis=1) / diag
    qa = ref.quats / np.linalg.norm(ref.quats, axis=1, keepdims=True)
    qb = decoded.quats / np.linalg.norm(decoded.quats, axis=1, keepdims=True)
    ang = np.degrees(2 * np.arccos(np.clip(np.abs((qa * qb).sum(1)), 0, 1)))
    scale = np.abs(decoded.scales.astype(np.float64) - ref.scales)
    col = np.abs(decoded.sh0.astype(np.float64) - ref.sh0) * SH_C0
    sh_err = float(((decoded.shN - ref.shN) ** 2).sum()) if ref.shN.size else 0.0
    sh_std = float(np.sqrt(((ref.shN - ref.shN.mean(0)) ** 2).sum() / max(ref.shN.size, 1)))
    sh_rmse = float(np.sqrt(sh_err / max(ref.shN.size, 1)))
    return {
        "matched unique": float(unique.mean()),
        "position/diag median": float(np.median(pos)),
        "position/diag max": float(pos.max()),
        "log-scale median": float(np.median(scale)),
        "log-scale RMS": float(np.sqrt(np.mean(scale ** 2))),
        "log-scale max": float(scale.max()),
        "colour median": float(np.median(col)),
        "colour RMS": float(np.sqrt(np.mean(col ** 2))),
        "colour max": float(col.max()),
        "opacity max": float(np.abs(sigmoid(decoded.opacities) - sigmoid(ref.opacities)).max()),
        "rotation median deg": float(np.median(ang)),
        "rotation max deg": float(ang.max()),
        "SH-rest RMSE/std": sh_rmse / sh_std if sh_std else 0.0,
        "SH-rest colour RMSE": colour_rmse(sh_err, ref.count),
    }


def fmt(v: float) -> str:
    return (f"{v:.3g}" if abs(v - 1) > 1e-3 else f"{v:.6f}") if isinstance(v, float) else str(v)


def table(rows: list[tuple[str, float, float]]) -> None:
    print(f"\n| {'metric':24} | {'ours':>10} | {'splat-transform':>15} | {'ours/theirs':>11} |")
    print(f"|{'-' * 26}|{'-' * 12}|{'-' * 17}|{'-' * 13}|")
    for name, a, b in rows:
        ratio = a / b if b else float("nan")
        print(f"| {name:24} | {fmt(float(a)):>10} | {fmt(float(b)):>15} | {fmt(ratio):>11} |")


def side_by_side(args: argparse.Namespace, tmp: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    (tmp / "in").mkdir()
    scene = read_ply(args.ply) if args.ply else synthetic_scene(args.compare, 3, seed=0)
    write_ply(scene, tmp / "in" / "splats.ply")
    ply = tmp / "in" / "splats.ply"
    label = args.ply.name if args.ply else f"synthetic {scene.count} splats SH{scene.sh_degree}"
    print(f"scene: {label}, PLY {ply.stat().st_size / 1e6:.2f} MB; k-means iterations {args.iterations}; "
          f"ours with {args.threads or 'default'} thread(s) and {json.dumps(cfg)}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)

    first, _ = ours(ply, tmp / "ours-first", {**cfg, "ordering": "morton"}, args.threads)
    mine, o_m = ours(ply, tmp / "ours", {**cfg, "ordering": "morton"}, args.threads)
    print(f"ours: {first.wall:.2f} s first run ({first.cpu:.2f} CPU-s), {mine.wall:.2f} s second "
          f"({mine.cpu:.2f} CPU-s); stage's own durations {json.dumps(o_m['durations'])}", flush=True)
    (tmp / "theirs").mkdir()
    theirs = splat_transform(ply, tmp / "theirs" / "scene.sog", args.iterations, args.fresh,
                             None if args.smoke else CACHE)
    here = same_machine(theirs.machine, machine())
    where = "this machine" if here else "ANOTHER machine (no same-machine ratio)" if theirs.machine else \
        "an unrecorded machine (no same-machine ratio; --fresh measures it here)"
    print(f"splat-transform {splat_transform_version()}: {theirs.wall:.1f} s ({theirs.cpu:.1f} CPU-s)"
          + (f", cached run of {theirs.cached} on {where}" if theirs.cached else ""), flush=True)
    o_size, t_size = (tmp / "ours" / "scene.sog").stat().st_size, (tmp / "theirs" / "scene.sog").stat().st_size
    e_ours, e_theirs = errors(decode(tmp / "ours" / "scene.sog", tmp), scene), \
        errors(decode(tmp / "theirs" / "scene.sog", tmp), scene)

    rows = [("wall time s", mine.wall, theirs.wall), ("CPU time s", mine.cpu, theirs.cpu),
            ("peak memory MB", mine.rss_mb, theirs.rss_mb), (".sog bytes", o_size, t_size),
            ("ratio vs PLY", ply.stat().st_size / o_size, ply.stat().st_size / t_size)]
    rows += [(k, e_ours[k], e_theirs[k]) for k in e_ours]
    table(rows)
    print(f"\nspeed-up: {theirs.wall / mine.wall:.1f}x wall, {theirs.cpu / mine.cpu:.1f}x CPU "
          f"(first run: {theirs.wall / first.wall:.1f}x wall, {theirs.cpu / first.cpu:.1f}x CPU); "
          f"load average now {os.getloadavg()[0]:.1f}" + ("" if here else "; NOT a same-machine ratio"))
    record: dict[str, Any] = {
        "scene": label, "splats": scene.count, "plyBytes": ply.stat().st_size,
        "rows": {name: {"ours": a, "theirs": b} for name, a, b in rows},
        "speedUpWall": theirs.wall / mine.wall, "speedUpCpu": theirs.cpu / mine.cpu,
        "reference": {"tool": f"splat-transform {splat_transform_version()}", "cached": theirs.cached or None,
                      "machine": theirs.machine, "sameMachine": here},
        "oursFirstRun": {"wall": first.wall, "cpu": first.cpu}, "palette": o_m.get("shPaletteSize"),
    }
    print(f"ours palette {o_m.get('shPaletteSize')} entries (colour error {o_m.get('shPaletteColourError')}), "
          f"splat-transform's rule gives {splat_transform_size(scene.count)}")
    print(f"ours per-file bytes: {o_m['sogFileBytes']}")

    if not args.skip_plas:
        _, auto_m = ours(ply, tmp / "auto", {**cfg, "ordering": "auto"}, args.threads)
        sizes = auto_m["orderingBytes"]
        print(f"\nPLAS vs Morton (v2 bytes): morton {sizes['morton']}, plas {sizes['plas']} "
              f"(plas/morton {sizes['plas'] / sizes['morton']:.3f}); PLAS sort+encode "
              f"{auto_m['durations']['plasSeconds']:.1f} s vs Morton {auto_m['durations']['mortonSeconds']:.1f} s")
        record["orderingBytes"] = sizes
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", type=int, default=15000, help="splats of the side-by-side scene (0: none)")
    p.add_argument("--scale", default="100000,1000000", help="sizes timed for ours alone ('' for none)")
    p.add_argument("--ply", type=Path, help="a trained scene to compare on instead of a synthetic one")
    p.add_argument("--iterations", type=int, default=10, help="k-means iterations, both encoders")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads for ours (default 1: splat-transform's k-means is single-threaded; "
                   "0: the libraries' defaults)")
    p.add_argument("--fresh", action="store_true", help="run splat-transform even when a cached run exists")
    p.add_argument("--skip-plas", action="store_true", help="skip the PLAS vs Morton comparison")
    p.add_argument("--config", default="{}", help='more options for our stage, JSON (e.g. \'{"shPaletteError": 0}\')')
    add_smoke_flag(p)
    args = p.parse_args()
    if args.smoke:
        args.compare, args.scale, args.iterations, args.ply = 500, "2000", 2, None
    tmp = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    cfg = {"kmeansIterations": args.iterations, "formats": ["sog"], "qualityViews": 0, **json.loads(args.config)}

    results: dict[str, Any] = {"scale": {}}
    if args.compare or args.ply:
        results["sideBySide"] = side_by_side(args, tmp, cfg)
    for n in [int(s) for s in args.scale.split(",") if s]:
        d = tmp / f"scale{n}"
        (d / "in").mkdir(parents=True)
        big = synthetic_scene(n, 3, seed=1)
        write_ply(big, d / "in" / "splats.ply")
        del big
        run, m = ours(d / "in" / "splats.ply", d / "out", {**cfg, "ordering": "morton"}, args.threads)
        print(f"\nours alone, {n} splats SH3: {run.wall:.1f} s wall, {run.cpu:.1f} CPU-s "
              f"(stage {m['durations']['totalSeconds']:.1f} s), peak {run.rss_mb:.0f} MB, .sog "
              f"{m['sogBytes'] / 1e6:.2f} MB (ratio {m['compressionRatio']:.1f}x), palette {m.get('shPaletteSize')}; "
              f"{json.dumps(m['durations'])}", flush=True)
        results["scale"][str(n)] = {"wall": run.wall, "cpu": run.cpu, "peakMB": run.rss_mb, "sogBytes": m["sogBytes"],
                                    "compressionRatio": m["compressionRatio"], "palette": m.get("shPaletteSize")}
    shutil.rmtree(tmp, ignore_errors=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "smoke"}
    emit("compress", smoke=args.smoke, settings=settings, results=results)


if __name__ == "__main__":
    main()
