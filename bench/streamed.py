"""Streamed SOG benchmark: the compress stage on a large generated scene, then the same page in headless Chromium
opening scene.sog whole and streaming lod/lod-meta.json, in one run.

    .venv/bin/python bench/streamed.py [--splats 1200000]
    .venv/bin/python bench/streamed.py --smoke     # 6,000 splats cut into small chunks (seconds)

1. The compress stage with its defaults (a scene above a million splats is also written streamed): seconds of
   each step (the SH palette and encoding of scene.sog, the levels of detail, the streamed chunks), peak memory,
   bytes of scene.sog, of the whole streamed SOG, and of what the first view needs (lod-meta.json and the
   coarsest level's chunks).
2. The page, served on 127.0.0.1, in headless Chromium (SwiftShader: the CPU draws): seconds until the first
   frame is drawn and how many splats it holds, and until every splat of the scene is drawn, for scene.sog and
   for the streamed SOG. No network: the bytes above are what a real link would add.

The last line printed is a JSON record (bench/record.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import add_smoke_flag, emit  # noqa: E402

SMOKE = {"streamed": "always", "lodLevels": 3, "lodChunkSplats": 1024, "lodChunkExtent": 12.0,
         "lodChunkMinSplats": 256, "kmeansIterations": 3}


def compress(splats: int, root: Path, options: dict[str, Any]) -> dict[str, Any]:
    from tests.compress.helpers import write_train_output

    from spaceport.stages.compress.synthetic import synthetic_scene
    from spaceport.stages.runner import run_stage

    train = write_train_output(root / "train", synthetic_scene(splats, 3, 1), cameras=0, georef=False)
    t = time.perf_counter()
    result = run_stage("compress", str(train), str(root / "out"), {"qualityViews": 0, **options})
    wall = time.perf_counter() - t
    m = result.metrics
    lod = root / "out" / "lod"
    meta = json.loads((lod / "lod-meta.json").read_text())
    coarsest = meta["lodLevels"] - 1
    first = [name for name in meta["filenames"] if name.startswith(f"{coarsest}_")]
    first_bytes = (lod / "lod-meta.json").stat().st_size + sum(
        p.stat().st_size for name in first for p in (lod / name).parent.iterdir())
    return {"wallSeconds": round(wall, 1), "durations": m["durations"], "lodCounts": m["lodCounts"],
            "lodChunks": m["lodChunks"], "sogBytes": m["sogBytes"], "streamedBytes": m["streamedBytes"],
            "firstViewBytes": first_bytes,
            "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def browse(folder: Path, total: int, timeout: float) -> dict[str, Any]:
    from tests.viewer.browser import Chromium, chromium_path

    from spaceport.viewer.serve import serve_in_thread

    if chromium_path() is None:
        return {}
    server, url = serve_in_thread(folder)
    drawn = "window.spaceportViewer.app.stats.frame.gsplats"
    out = {}
    try:
        for name, query in (("sog", "content=./scene.sog&noui&nometrics"), ("streamed", "noui&nometrics")):
            t = time.perf_counter()
            with Chromium(640, 480) as browser:
                browser.open(f"{url}?{query}")
                browser.wait_for("window.spaceportReady", timeout=timeout)
                first, first_splats = time.perf_counter() - t, browser.evaluate(drawn)
                browser.wait_for(f"{drawn} === {total}", timeout=timeout)
                out[name] = {"firstFrameSeconds": round(first, 1), "firstFrameSplats": first_splats,
                             "allDrawnSeconds": round(time.perf_counter() - t, 1)}
    finally:
        server.shutdown()
        server.server_close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splats", type=int, default=1_200_000)
    parser.add_argument("--timeout", type=float, default=600, help="seconds the browser may take for each wait")
    add_smoke_flag(parser)
    args = parser.parse_args()
    splats, options = (6000, SMOKE) if args.smoke else (args.splats, {})
    with tempfile.TemporaryDirectory(prefix="bench-streamed-") as tmp:
        c = compress(splats, Path(tmp), options)
        b = browse(Path(tmp) / "out", splats, args.timeout)
    d = c["durations"]
    print(f"compress stage, {splats:,} splats with SH3: {c['wallSeconds']} s, peak {c['peakRssMiB']} MiB")
    print(f"  scene.sog (palette + encoding): {d.get('paletteSeconds', 0) + d.get('mortonSeconds', 0):.1f} s, "
          f"{c['sogBytes']:,} bytes")
    print(f"  streamed SOG: levels {c['lodCounts']} in {d['decimateSeconds']:.1f} s, {c['lodChunks']} chunks "
          f"in {d['streamedSeconds']:.1f} s, {c['streamedBytes']:,} bytes ({c['firstViewBytes']:,} for the first view)")
    for name, row in b.items():
        print(f"  Chromium, {name:8}: first frame {row['firstFrameSeconds']} s ({row['firstFrameSplats']:,} splats), "
              f"every splat drawn {row['allDrawnSeconds']} s")
    if not b:
        print("  Chromium: not installed, the page was not timed")
    emit("streamed", smoke=args.smoke, settings={"splats": splats, "options": options},
         results={"compress": c, "browser": b})


if __name__ == "__main__":
    main()
