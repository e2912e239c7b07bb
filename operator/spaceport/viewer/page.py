"""The viewer page written next to each `.sog`: PlayCanvas's viewer plus a panel of the run's metrics.

The page is ours (the package's own ``index.html`` is for its standalone build); it imports
``createViewer`` from the package's ``index.js`` copied beside it. Every URL is relative, so the folder
works from ``spaceport view``, from any static web server and from an S3 bucket served as a website.

The scene is a ``.sog`` (loaded whole) or a streamed SOG's ``lod-meta.json`` (the engine streams its chunks by
level of detail, coarsest first).

URL parameters (besides the viewer's own ``?noui``, ``?noanim``, ``?webgl``, and ``?fullload``: a streamed
scene is revealed only once its finest levels have loaded, for screenshots):
``?content=URL`` and ``?settings=URL`` replace the defaults, ``?nometrics`` hides the panel.
``window.spaceportReady`` becomes true once the first frame of the scene has been drawn (tests wait on it).

A scene whose up is not the viewer's (a georeferenced, east-north-up one) is turned by the page: the
defaults carry the splat entity's rotation (framing.py), set as the entity joins the scene, before the
viewer measures the scene's bounds. The .sog keeps the scene's own frame.
"""

from __future__ import annotations

import html
import json

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0, maximum-scale=1.0, user-scalable=no">
<meta name="generator" content="spaceport">
<title>__TITLE__</title>
<link rel="stylesheet" href="./index.css">
<style>
  html, body { height: 100%; margin: 0; overflow: hidden; background: #000; }
  #viewer { position: absolute; inset: 0; }
  #spaceport-metrics {
    position: absolute; top: 8px; left: 8px; z-index: 100; max-width: 46ch;
    font: 12px/1.45 system-ui, sans-serif; color: #eee;
    background: rgba(20, 20, 24, 0.72); border-radius: 6px; padding: 6px 10px;
  }
  #spaceport-metrics summary { cursor: pointer; font-weight: 600; }
  #spaceport-error {
    position: absolute; top: 40%; left: 50%; transform: translate(-50%, -50%); z-index: 101; max-width: 60ch;
    font: 14px/1.5 system-ui, sans-serif; color: #fff; background: #7a1f1f; border-radius: 6px; padding: 10px 14px;
  }
  #spaceport-metrics table { border-collapse: collapse; margin-top: 4px; }
  #spaceport-metrics td { padding: 1px 6px 1px 0; vertical-align: top; }
  #spaceport-metrics td:last-child { text-align: right; font-variant-numeric: tabular-nums; }
</style>
<script type="application/json" id="spaceport-defaults">__DEFAULTS__</script>
</head>
<body>
<div id="viewer"></div>
<div id="spaceport-error" hidden></div>
<aside id="spaceport-metrics" hidden><details open><summary>__TITLE__</summary><table></table></details></aside>
<script type="module">
import { createViewer } from './index.js';

const url = new URL(location.href);
const defaults = JSON.parse(document.getElementById('spaceport-defaults').textContent);
const contentUrl = url.searchParams.get('content') ?? defaults.content;
const settingsUrl = url.searchParams.get('settings') ?? './settings.json';
const flag = (name) => url.searchParams.has(name);
const sceneRotation = defaults.sceneRotation;  // [x, y, z, w] of the splat entity, or absent: the viewer's own

window.spaceportReady = false;
window.firstFrame = () => { window.spaceportReady = true; };

const LABELS = [
  ['registeredImages', 'Registered images', (v, m) => {
    const total = m.imagesUsed ?? m.images;
    return total ? `${v} / ${total}` : `${v}`;
  }],
  ['gaussians', 'Gaussians', (v) => Number(v).toLocaleString('en')],
  ['psnr', 'PSNR', (v, m) => `${Number(v).toFixed(2)} dB${m.evalViews === 'heldOut' ? ' (held-out views)' : ''}`],
  ['ssim', 'SSIM', (v) => Number(v).toFixed(3)],
  ['psnrDropDb', 'PSNR drop after compression', (v) => `${(Math.round(Number(v) * 100) / 100 + 0).toFixed(2)} dB`],
  ['plyBytes', 'PLY size', (v) => bytes(v)],
  ['sogBytes', 'SOG size', (v) => bytes(v)],
  ['compressionRatio', 'Compression ratio', (v) => `${Number(v).toFixed(1)}\\u00d7`],
  ['streamedBytes', 'Streamed SOG size', (v) => bytes(v)],
  ['lodCounts', 'Levels of detail', (v) => `${v.length} (coarsest ${Number(v[v.length - 1]).toLocaleString('en')})`],
];
const bytes = (n) => {
  const units = ['B', 'KB', 'MB', 'GB'];
  let v = Number(n), i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
};
const getJson = (name) => fetch(name).then((r) => (r.ok ? r.json() : null)).catch(() => null);

async function showMetrics() {
  if (flag('nometrics')) return;
  const [info, result] = await Promise.all([getJson('./metrics.json'), getJson('./result.json')]);
  // metrics.json holds the earlier stages' values, which win on a shared key (compress's ssim compares
  // compressed with uncompressed renders; the scene's own is training's)
  const m = { ...(result?.metrics ?? {}), ...(info?.metrics ?? {}) };
  const durations = { ...(info?.durations ?? {}) };
  if (result?.durationSeconds !== undefined) durations.compress = result.durationSeconds;
  const rows = LABELS.filter(([k]) => m[k] !== undefined && m[k] !== null).map(([k, label, f]) => [label, f(m[k], m)]);
  for (const [stage, s] of Object.entries(durations)) rows.push([`${stage} time`, `${Number(s).toFixed(1)} s`]);
  const geo = info?.georef;
  if (geo) rows.push(['Origin (WGS84)', `${Number(geo.latitude).toFixed(6)}, ${Number(geo.longitude).toFixed(6)}`]);
  if (!rows.length) return;
  const table = document.querySelector('#spaceport-metrics table');
  for (const [label, value] of rows) {
    const tr = table.insertRow();
    tr.insertCell().textContent = label;
    tr.insertCell().textContent = value;
  }
  document.getElementById('spaceport-metrics').hidden = false;
}

const showError = (text) => {
  const box = document.getElementById('spaceport-error');
  box.textContent = text;
  box.hidden = false;
};
if (location.protocol === 'file:') {
  showError('Browsers do not load this page from a file: serve the folder, e.g. `spaceport view DIR`.');
}
// A streamed SOG (lod-meta.json): the engine fetches the index itself and ignores a prefetched response, so
// the page only asks whether it is there.
const streamed = new URL(contentUrl, location.href).pathname.split('/').pop().toLowerCase() === 'lod-meta.json';
const contents = streamed ? undefined : fetch(contentUrl);
(contents ?? fetch(contentUrl, { method: 'HEAD' })).then(
  (r) => { if (!r.ok) showError(`Cannot load the scene ${contentUrl}: HTTP ${r.status}`); },
  (e) => showError(`Cannot load the scene ${contentUrl}: ${e}`),
);

showMetrics();
window.spaceportViewer = await createViewer({
  container: document.getElementById('viewer'),
  settings: fetch(settingsUrl).then((r) => r.json()),
  contentUrl,
  contents,
  ui: !flag('noui'),
  noanim: flag('noanim'),
  nofx: flag('nofx'),
  ministats: flag('ministats'),
  fullload: flag('fullload'),
  renderer: flag('webgl') ? 'webgl' : 'webgpu',
  exposeGlobals: true,
});
window.spaceportTurned = false;
if (sceneRotation) {
  // createViewer resolves while the scene still loads: the entity joins the root later, and the viewer
  // measures the scene's bounds after that, so turning it as it joins keeps framing and clipping right.
  const root = window.spaceportViewer.app.root;
  const turn = (entity) => {
    entity.setLocalRotation(...sceneRotation);
    window.spaceportTurned = true;
  };
  const loaded = root.findByName('gsplat');
  if (loaded) {
    console.warn('spaceport: the scene loaded before it could be turned; its bounds are the unturned ones');
    turn(loaded);
  }
  root.on('childinsert', (child) => { if (child.name === 'gsplat') turn(child); });
}
</script>
</body>
</html>
"""


def render_page(sog_name: str, title: str, scene_rotation: list[float] | None = None) -> str:
    """The page's HTML for a scene file named ``sog_name`` in the same folder; ``scene_rotation`` is the
    splat entity's rotation [x, y, z, w] when the scene is turned for the viewer (framing.entity_rotation)."""
    settings: dict[str, object] = {"content": f"./{sog_name}"}
    if scene_rotation is not None:
        settings["sceneRotation"] = list(scene_rotation)
    defaults = json.dumps(settings).replace("</", "<\\/")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DEFAULTS__", defaults)
