"""`spaceport inspect FILE`: what a 3DGS .ply, a .sog bundle, a SOG meta.json or a streamed SOG's lod-meta.json
holds."""

from __future__ import annotations

import contextlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

from spaceport.api import COMPRESS
from spaceport.contract import BadInputError

SH_DEGREE_FOR_COEFFS = {0: 0, 3: 1, 8: 2, 15: 3}


def inspect_file(path: str | Path) -> dict[str, Any]:
    """A description of ``path`` as plain data (printed by :func:`format_report` or as JSON)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BadInputError(f"{p} does not exist or is not a file")
    name = p.name.lower()
    if name.endswith(".ply"):
        info = _inspect_ply(p)
    elif name.endswith(".sog"):
        info = _inspect_sog(p)
    elif name.endswith(".json"):
        info = _inspect_meta_file(p)
    else:
        raise BadInputError(f"{p}: cannot inspect this kind of file; give a .ply, .sog, meta.json or lod-meta.json")
    info = {"file": str(p), "bytes": p.stat().st_size, **info}
    georef = p.parent / COMPRESS.files.georef
    if georef.is_file():
        with contextlib.suppress(ValueError):
            info["georef"] = json.loads(georef.read_text())
    return info


def _inspect_ply(p: Path) -> dict[str, Any]:
    import numpy as np
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(p))
    except Exception as e:
        raise BadInputError(f"{p}: not a readable PLY file ({e})") from e
    if "vertex" not in ply:
        raise BadInputError(f"{p}: PLY has no vertex element")
    v = ply["vertex"]
    names = [prop.name for prop in v.properties]
    info: dict[str, Any] = {"format": "ply", "count": int(v.count), "properties": len(names)}
    if not {"x", "y", "z"} <= set(names):
        return info
    xyz = np.stack([np.asarray(v[c], float) for c in "xyz"], 1)
    if len(xyz):
        info["bounds"] = {"min": xyz.min(0).round(4).tolist(), "max": xyz.max(0).round(4).tolist()}
    rest = sum(1 for n in names if n.startswith("f_rest_"))
    if "f_dc_0" not in names:
        info["kind"] = "point cloud"
        return info
    info["kind"] = "3D Gaussian splats"
    k = rest // 3
    info["shDegree"] = SH_DEGREE_FOR_COEFFS.get(k, f"unknown ({rest} f_rest fields)")
    if "opacity" in names and len(xyz):
        alpha = 1 / (1 + np.exp(-np.asarray(v["opacity"], float)))
        info["opacity"] = {"mean": round(float(alpha.mean()), 4), "below1Percent": int((alpha < 0.01).sum())}
    if "scale_0" in names and len(xyz):
        scales = np.exp(np.stack([np.asarray(v[f"scale_{i}"], float) for i in range(3)], 1)).max(1)
        info["scale"] = {"medianMax": float(f"{np.median(scales):.4g}"), "max": float(f"{scales.max():.4g}")}
    return info


def _inspect_sog(p: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(p) as z:
            entries = {i.filename: i.file_size for i in z.infolist()}
            if "meta.json" not in entries:
                raise BadInputError(f"{p}: .sog bundle has no meta.json")
            meta = json.loads(z.read("meta.json"))
    except zipfile.BadZipFile as e:
        raise BadInputError(f"{p}: not a .sog bundle (not a ZIP archive)") from e
    except ValueError as e:
        raise BadInputError(f"{p}: meta.json is not JSON ({e})") from e
    return {"format": "sog (bundled)", **describe_meta(meta), "files": entries}


def _inspect_meta_file(p: Path) -> dict[str, Any]:
    try:
        meta = json.loads(p.read_text())
    except ValueError as e:
        raise BadInputError(f"{p}: not JSON ({e})") from e
    if isinstance(meta, dict) and "lodLevels" in meta:
        return _inspect_lod(p, meta)
    if not isinstance(meta, dict) or "means" not in meta:
        raise BadInputError(f"{p}: not a SOG meta.json (no 'means' section)")
    files = {}
    for section in meta.values():
        for name in section.get("files", []) if isinstance(section, dict) else []:
            f = p.parent / name
            files[name] = f.stat().st_size if f.is_file() else None
    missing = [n for n, s in files.items() if s is None]
    info = {"format": "sog (unbundled)", **describe_meta(meta), "files": files}
    if missing:
        info["missingFiles"] = missing
    return info


def _inspect_lod(p: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """A streamed SOG: its levels, chunks (each an unbundled SOG) and the bound of its spatial tree."""
    names = meta.get("filenames") or []
    counts = meta.get("counts") or []
    info: dict[str, Any] = {"format": "sog (streamed)", "count": counts[0] if counts else None,
                            "lodCounts": counts, "chunks": len(names)}
    if gen := (meta.get("asset") or {}).get("generator"):
        info["generator"] = gen
    if bound := (meta.get("tree") or {}).get("bound"):
        info["bounds"] = {"min": [round(x, 4) for x in bound["min"]], "max": [round(x, 4) for x in bound["max"]]}
    if missing := [n for n in names if not (p.parent / n).is_file()]:
        info["missingFiles"] = missing
    return info


def _unlog(v: float) -> float:
    """Inverse of the format's sign(v)·log1p(|v|) on positions."""
    return math.copysign(math.expm1(abs(v)), v)


def describe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Counts, SH degree and bounds from a SOG v2 or SOGS v1 meta.json."""
    version = meta.get("version", 1)
    info: dict[str, Any] = {"sogVersion": version}
    means = meta.get("means", {})
    if version >= 2:
        info["count"] = meta.get("count")
        shn = meta.get("shN")
        info["shDegree"] = int(shn.get("bands", 0)) if shn else 0
        if shn:
            info["shPalette"] = shn.get("count")
        if gen := meta.get("asset", {}).get("generator"):
            info["generator"] = gen
    else:
        shape = means.get("shape") or [None]
        info["count"] = shape[0]
        shn = meta.get("shN")
        info["shDegree"] = _v1_degree(shn) if shn else 0
    if "mins" in means and "maxs" in means:
        info["bounds"] = {"min": [round(_unlog(x), 4) for x in means["mins"]],
                          "max": [round(_unlog(x), 4) for x in means["maxs"]]}
    return info


def _v1_degree(shn: dict[str, Any]) -> int | str:
    shape = shn.get("shape") or []
    coeffs = shape[1] if len(shape) > 1 else None
    return SH_DEGREE_FOR_COEFFS.get(coeffs, "unknown") if coeffs is not None else "unknown"


def format_report(info: dict[str, Any]) -> str:
    """Aligned ``key: value`` lines for people."""
    lines = []

    def add(key: str, value: Any) -> None:
        lines.append(f"{key + ':':<14} {value}")

    add("file", info["file"])
    add("format", info.get("format"))
    if "kind" in info:
        add("kind", info["kind"])
    add("size", f"{info['bytes']:,} bytes")
    if info.get("count") is not None:
        add("splats" if info.get("kind") != "point cloud" else "points", f"{info['count']:,}")
    if counts := info.get("lodCounts"):
        add("levels", " / ".join(f"{c:,}" for c in counts) + f" splats in {info['chunks']} chunks")
    for key in ("shDegree", "shPalette", "sogVersion", "generator", "properties"):
        if key in info:
            add(key, info[key])
    if b := info.get("bounds"):
        extent = [round(hi - lo, 4) for lo, hi in zip(b["min"], b["max"], strict=True)]
        add("bounds", f"min {b['min']}  max {b['max']}  extent {extent}")
    if o := info.get("opacity"):
        add("opacity", f"mean {o['mean']}, {o['below1Percent']:,} below 1%")
    if s := info.get("scale"):
        add("scale", f"median {s['medianMax']}, max {s['max']} (largest axis, scene units)")
    for name, size in (info.get("files") or {}).items():
        add("  " + name, "missing" if size is None else f"{size:,} bytes")
    if "lodCounts" in info and info.get("missingFiles"):
        add("missing", ", ".join(info["missingFiles"]))
    if g := info.get("georef"):
        add("georef", f"lat {g.get('latitude')}, lon {g.get('longitude')}, alt {g.get('altitude')} "
                      f"({g.get('frame', 'ENU')} origin)")
    return "\n".join(lines)
