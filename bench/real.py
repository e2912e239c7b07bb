"""Real photos through the whole product: `spaceport run` on each folder, one table, side-by-side PNGs.

    python bench/real.py                              # every folder of ../shared/data/real/, --preset draft
    python bench/real.py PHOTOS [PHOTOS ...]          # any folders of photos
    python bench/real.py --stages sfm                 # SfM only (`spaceport stage sfm`, the preset's options)
    python bench/real.py --ref-tree /tmp/base         # the same runs with another checkout, side by side
    python bench/real.py --smoke                      # a tiny generated flight, seconds: what CI runs

Each row is computed here from the outputs, not copied from the stages' metrics: registered images from
the model, GPS agreement from the photos' own EXIF tags and ``georef.json`` (WGS84 -> ENU below, not
COLMAP's), held-out PSNR/SSIM as the train stage reported them, sizes of the written files. For every
held-out view it writes ``<out>/<tree>/<folder>/side-by-side/<view>.png``: the photo left, the render right.
The reference (``--ref-tree``, e.g. ``git worktree add /tmp/base HEAD~5``) runs the same command on the same
photos in the same invocation, interleaved with ours, so both see the same machine.
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from bench.record import emit  # noqa: E402

from spaceport.api.presets import PRESETS, preset_defaults  # noqa: E402
from spaceport.api.sfm import SfmOptions  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
WGS84_A, WGS84_F = 6378137.0, 1 / 298.257223563


def ecef(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(lat), np.radians(lon)
    e2 = WGS84_F * (2 - WGS84_F)
    n = WGS84_A / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    return np.stack([(n + alt) * np.cos(lat) * np.cos(lon), (n + alt) * np.cos(lat) * np.sin(lon),
                     (n * (1 - e2) + alt) * np.sin(lat)], -1)


def to_enu(lla: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    lat0, lon0 = np.radians(origin[0]), np.radians(origin[1])
    d = ecef(lla[:, 0], lla[:, 1], lla[:, 2]) - ecef(*(np.array([v]) for v in origin))
    r = np.array([[-np.sin(lon0), np.cos(lon0), 0],
                  [-np.sin(lat0) * np.cos(lon0), -np.sin(lat0) * np.sin(lon0), np.cos(lat0)],
                  [np.cos(lat0) * np.cos(lon0), np.cos(lat0) * np.sin(lon0), np.sin(lat0)]])
    return d @ r.T


def exif_gps(path: Path) -> tuple[float, float, float] | None:
    """Latitude, longitude, altitude straight from a photo's GPS IFD."""
    def num(v: Any) -> float:
        return float(v[0]) / float(v[1]) if isinstance(v, tuple) else float(v)

    g = Image.open(path).getexif().get_ifd(0x8825)
    if 2 not in g or 4 not in g:
        return None
    lat = sum(num(x) / 60**i for i, x in enumerate(g[2])) * (-1 if str(g.get(1, "N")).startswith("S") else 1)
    lon = sum(num(x) / 60**i for i, x in enumerate(g[4])) * (-1 if str(g.get(3, "E")).startswith("W") else 1)
    return lat, lon, num(g.get(6, 0.0))


def photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and "out" not in p.parts)


def gps_agreement(folder: Path, sfm: Path) -> dict[str, float] | None:
    """Camera centres of the model against the photos' GPS tags, in the ENU frame georef.json names."""
    import pycolmap

    if not (sfm / "georef.json").exists():
        return None
    g = json.loads((sfm / "georef.json").read_text())
    rec = pycolmap.Reconstruction(str(sfm / "sparse"))
    names, centres, lla = [], [], []
    for im in rec.images.values():
        tag = exif_gps(folder / im.name)
        if im.has_pose and tag is not None:
            names.append(im.name)
            centres.append(np.asarray(im.projection_center()))
            lla.append(tag)
    if not names:
        return None
    d = np.array(centres) - to_enu(np.array(lla), (g["latitude"], g["longitude"], g["altitude"]))
    h = np.linalg.norm(d[:, :2], axis=1)
    return {"gpsMedianH": float(np.median(h)), "gpsRmsH": float(np.sqrt(np.mean(h**2))),
            "gpsMedianV": float(np.median(np.abs(d[:, 2])))}


def run(tree: Path, argv: list[str], log: Path) -> tuple[int, float, int]:
    """Run `spaceport ARGV` from ``tree``'s source; exit code, wall seconds, peak RSS of the process (bytes)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from spaceport.cli import main; "
                                 "sys.exit(main())", *argv], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tree)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss * 1024


def side_by_side(train: Path, dest: Path) -> int:
    """One PNG per held-out view: the photo (left) and the render from the trained splats (right)."""
    from spaceport.splats import read_ply
    from spaceport.stages.train.render import load_cameras, render
    from spaceport.storage import LocalStore

    scene = read_ply(train / "splats.ply")
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for cam in load_cameras(LocalStore(train)):
        if not cam.held_out:
            continue
        photo = np.asarray(Image.open(train / "holdout" / f"{cam.name}.png").convert("RGB"))
        image = (render(scene, cam) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(np.concatenate([photo, image], axis=1)).save(dest / (cam.name.replace("/", "_") + ".png"))
        n += 1
    return n


def one(folder: Path, tree: Path, out: Path, preset: str, stages: str, config: dict | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"folder": folder.name, "tree": str(tree), "photos": len(photos_in(folder))}
    if stages == "sfm":
        # Only the preset's fields and the user's: a reference tree may not know today's other options.
        preset_fields = SfmOptions.model_validate(preset_defaults(preset, "sfm")).model_dump(
            by_alias=True, include=set(preset_defaults(preset, "sfm")))
        sfm = out / "sfm"
        code, wall, rss = run(tree, ["stage", "sfm", "--input", str(folder), "--output", str(sfm), "--config",
                                     json.dumps({**preset_fields, **(config or {}).get("sfm", {})})], out / "log.txt")
        run_dir = out
    else:
        argv = ["run", str(folder), "--out", str(out / "run"), "--preset", preset]
        if config:
            (out / "config.json").write_text(json.dumps(config))
            argv += ["--config", str(out / "config.json")]
        code, wall, rss = run(tree, argv, out / "log.txt")
        runs = sorted((out / "run" / "runs").glob("*"), key=lambda p: int(p.name)) if (out / "run").exists() else []
        run_dir = runs[-1] if runs else out
    row.update(exit=code, wallSeconds=round(wall, 1), peakRssBytes=rss)
    for stage in ("sfm", "train", "compress"):
        result = run_dir / stage / "result.json"
        if result.exists():
            row[f"{stage}Seconds"] = json.loads(result.read_text())["durationSeconds"]
    if (run_dir / "sfm" / "sparse").exists():
        import pycolmap

        row["registered"] = pycolmap.Reconstruction(str(run_dir / "sfm" / "sparse")).num_reg_images()
        row.update(gps_agreement(folder, run_dir / "sfm") or {})
        metrics = json.loads((run_dir / "sfm" / "result.json").read_text())["metrics"]
        row["focalLength"] = metrics.get("focalLength")
    train = run_dir / "train"
    if (train / "result.json").exists():
        m = json.loads((train / "result.json").read_text())["metrics"]
        row.update(psnr=m.get("psnr"), psnrPhotographed=m.get("psnrPhotographed"), ssim=m.get("ssim"),
                   gaussians=m.get("gaussians"),
                   plyBytes=(train / "splats.ply").stat().st_size)
        row["sideBySide"] = side_by_side(train, out / "side-by-side")
    sog = run_dir / "compress" / "scene.sog"
    if sog.exists():
        row["sogBytes"] = sog.stat().st_size
    return row


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| folder | tree | photos | registered | GPS med/RMS h, med v (m) | sfm s | train s | compress s | "
            "PSNR | PSNR as photographed | SSIM | PLY MB | SOG MB | peak RSS GB |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        gps = (f"{r['gpsMedianH']:.2f} / {r['gpsRmsH']:.2f}, {r['gpsMedianV']:.2f}" if "gpsMedianH" in r else "-")
        lines.append(f"| {r['folder']} | {Path(r['tree']).name} | {r['photos']} | {fmt(r.get('registered'))} | {gps} | "
                     f"{fmt(r.get('sfmSeconds'), '.0f')} | {fmt(r.get('trainSeconds'), '.0f')} | "
                     f"{fmt(r.get('compressSeconds'), '.1f')} | {fmt(r.get('psnr'), '.2f')} | "
                     f"{fmt(r.get('psnrPhotographed'), '.2f')} | "
                     f"{fmt(r.get('ssim'), '.3f')} | {fmt(r.get('plyBytes') and r['plyBytes'] / 1e6, '.1f')} | "
                     f"{fmt(r.get('sogBytes') and r['sogBytes'] / 1e6, '.2f')} | {r['peakRssBytes'] / 1e9:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, help=f"photo folders (default: the folders of {REAL})")
    ap.add_argument("--preset", default="draft", choices=PRESETS)
    ap.add_argument("--stages", default="all", choices=("all", "sfm"))
    ap.add_argument("--config", type=Path, help="JSON with sfm/train/compress sections, for every run")
    ap.add_argument("--out", type=Path, help="where runs go (default: a temporary folder for --smoke, else "
                    f"{Path(tempfile.gettempdir()) / 'spaceport-bench-real'}, where runs continue)")
    ap.add_argument("--ref-tree", type=Path, help="another checkout to run the same photos with (the reference)")
    ap.add_argument("--smoke", action="store_true", help="a tiny generated flight, a few steps: seconds")
    args = ap.parse_args()
    config = json.loads(args.config.read_text()) if args.config else None
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="bench-real-")) if args.smoke else \
            Path(tempfile.gettempdir()) / "spaceport-bench-real"
    folders = args.folders
    if args.smoke:
        from spaceport.synthetic import generate_flight

        folders = [generate_flight(args.out / "photos" / "smoke", n_images=8, width=160, height=120, seed=3).out_dir]
        config = {"train": {"iterations": 20, "evalEvery": 0}}
    elif not folders:
        if not REAL.is_dir():
            sys.exit(f"no folders given and {REAL} does not exist: name photo folders on the command line")
        folders = sorted(p for p in REAL.iterdir() if p.is_dir())
    trees = [ROOT] + ([args.ref_tree.resolve()] if args.ref_tree else [])
    rows = []
    for folder in folders:
        for tree in trees:  # interleaved: ours and the reference on the same folder back to back
            label = "ours" if tree == ROOT else "ref"
            rows.append(one(folder.resolve(), tree, args.out / label / folder.name, args.preset, args.stages, config))
            print(f"{folder.name} ({label}): exit {rows[-1]['exit']}, {rows[-1]['wallSeconds']} s", flush=True)
    print(f"\npreset {args.preset}, stages {args.stages}, outputs under {args.out}\n")
    print(table(rows))
    emit("real", smoke=args.smoke, settings={"preset": args.preset, "stages": args.stages,
                                             "folders": [str(f) for f in folders]}, results={"rows": rows})
    return 1 if any(r["exit"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
