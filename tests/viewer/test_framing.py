"""The viewer opens on the scene: above a georeferenced survey looking down at all of it, orbiting about its up."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spaceport.splats import read_ply
from spaceport.storage import LocalStore
from spaceport.viewer import write_viewer
from spaceport.viewer.framing import AERIAL_ELEVATION_DEG, choose_start, entity_rotation, scene_up, turn_to_viewer
from spaceport.viewer.serve import serve_in_thread
from spaceport.viewer.settings import VIEWER_FLIP
from tests.viewer.browser import Chromium, chromium_path
from tests.viewer.conftest import FIELD_COLOURS, ROAD_COLOUR
from tests.viewer.test_viewer import GEOREF, trained_camera

WIDTH, HEIGHT = 640, 480
ALTITUDE = 30.0


def nadir_camera(name: str, east: float, north: float, heading: float) -> dict:
    """A drone photo straight down from ``ALTITUDE`` m; ``heading`` +1: the image's top is north, -1: south."""
    right, down, forward = np.array([heading, 0.0, 0.0]), np.array([0.0, -heading, 0.0]), np.array([0.0, 0.0, -1.0])
    rot = np.stack([right, down, forward])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rot, -rot @ np.array([east, north, ALTITUDE])
    return {"name": name, "width": 320, "height": 240, "fx": 228.0, "fy": 228.0, "cx": 160.0, "cy": 120.0,
            "worldToCamera": w2c.tolist(), "heldOut": False}


def lawnmower() -> list[dict]:
    """Four passes east and west over the survey, the drone turning round (and its photos with it) each pass."""
    cams = []
    for i, north in enumerate((-15.0, -5.0, 5.0, 15.0)):
        heading = 1.0 if i % 2 == 0 else -1.0
        for j, east in enumerate(np.linspace(-25, 25, 6)):
            cams.append(nadir_camera(f"DJI_{i * 6 + j:04d}.JPG", float(east), north, heading))
    return cams


@pytest.fixture
def survey_dir(tmp_path: Path, survey_files: dict[str, Path]) -> Path:
    train = LocalStore(tmp_path / "train")
    train.write_text("cameras.json", json.dumps({"cameras": lawnmower()}))
    train.write_text("georef.json", json.dumps(GEOREF))
    train.write_text("result.json", json.dumps({"stage": "train", "metrics": {"gaussians": 24000}}))
    out = tmp_path / "compress"
    out.mkdir()
    shutil.copy(survey_files["sog"], out / "scene.sog")
    write_viewer(LocalStore(out), "scene.sog", source=train, means=read_ply(survey_files["ply"]).means)
    return out


def test_an_aerial_survey_opens_above_its_middle_looking_down() -> None:
    from tests.viewer.conftest import survey_scene

    start = choose_start(lawnmower(), survey_scene().means, GEOREF)
    assert start.kind == "aerial" and start.turn is not None and start.pose is not None
    # Back from the viewer's world (turned, then 180° about Z) to east-north-up.
    to_enu = (VIEWER_FLIP @ start.turn).T
    position, target = to_enu @ np.array(start.pose.position), to_enu @ np.array(start.pose.target)
    assert np.abs(target[:2]).max() < 2.0 and abs(target[2]) < 0.1, "the orbit point is the survey's middle"
    view = target - position
    elevation = np.degrees(np.arcsin(-view[2] / np.linalg.norm(view)))
    assert elevation == pytest.approx(AERIAL_ELEVATION_DEG, abs=0.01)
    assert view[0] == pytest.approx(0, abs=1e-6) and view[1] > 0, "looking north: north is the top of the screen"
    assert position[2] > ALTITUDE, "far enough above to hold the whole survey"


def test_east_north_up_becomes_the_viewers_up() -> None:
    turn = turn_to_viewer(scene_up([], GEOREF))
    # In the viewer's world (+Y up) east-north-up's +Z is up, and the turn is a proper rotation.
    assert VIEWER_FLIP @ turn @ np.array([0, 0, 1.0]) == pytest.approx([0, 1, 0])
    assert np.linalg.det(turn) == pytest.approx(1.0)
    x, y, z, w = entity_rotation(turn)
    assert np.hypot(np.hypot(x, y), np.hypot(z, w)) == pytest.approx(1.0)


def test_ground_level_photos_open_at_a_training_camera_unturned() -> None:
    cams = [trained_camera(f"IMG_{i:04d}.jpg", (0.4 * i - 0.4, -0.9, -3.0)) for i in range(3)]
    start = choose_start(cams)
    assert start.kind == "camera" and start.turn is None  # upright photos: their up is the viewer's already
    assert start.pose is not None and start.pose.position == pytest.approx((0.0, 0.9, -3.0))


def test_a_nadir_flight_without_gps_opens_at_a_training_camera() -> None:
    """Without GPS the up axis comes from the photos; a lawnmower flight's photos disagree on it."""
    start = choose_start(lawnmower())
    assert start.kind == "camera" and start.turn is None


def test_a_scene_the_compress_stage_turned_itself_is_not_turned_again() -> None:
    turned_enu = turn_to_viewer(np.array([0, 0, 1.0]))  # the .sog already has east-north-up's +Z as our -Y
    start = choose_start(lawnmower(), None, GEOREF, scene_rotation=turned_enu)
    assert start.turn is None and start.kind == "aerial"


needs_chromium = pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (make setup)")


def frame_measures(image: np.ndarray) -> dict[str, float]:
    """How much of the frame shows the scene, how sharp it is, and how much of each field it shows."""
    lit = image.max(axis=2) > 0.06  # the background is black
    grad = np.hypot(np.diff(image, axis=0)[:, :-1], np.diff(image, axis=1)[:-1]).max(axis=2)
    palette = np.array([*FIELD_COLOURS.values(), ROAD_COLOUR])
    nearest = np.argmin(((image[..., None, :] - palette) ** 2).sum(-1), axis=-1)
    shares = {name: float(((nearest == i) & lit).mean()) for i, name in enumerate([*FIELD_COLOURS, "road"])}
    return {"filled": float(lit.mean()), "edges": float((grad > 0.08).mean()), **shares}


@needs_chromium
def test_chromium_shows_the_whole_survey_from_above_and_orbits_about_its_up(survey_dir: Path) -> None:
    server, url = serve_in_thread(survey_dir)
    try:
        with Chromium(WIDTH, HEIGHT) as browser:
            browser.open(f"{url}?noui&nometrics")
            browser.wait_for("window.spaceportReady", timeout=120)
            shot = browser.screenshot()
            turned = browser.evaluate("window.spaceportTurned")
            # ENU's +Z as the viewer draws it: the splat entity's local +Z in the viewer's world (+Y up).
            up = browser.evaluate("(() => { const f = window.spaceportViewer.app.root.findByName('gsplat').forward;"
                                  " return [-f.x, -f.y, -f.z]; })()")
            before = camera_position(browser)
            drag(browser, (WIDTH // 2, HEIGHT // 2), (WIDTH // 2 + 160, HEIGHT // 2))
            after = settled_camera_position(browser)
            orbited = browser.screenshot()
    finally:
        server.shutdown()
        server.server_close()
    # Kept beside the page for a person to look at (pytest's tmp folder).
    Image.fromarray((shot * 255).round().astype(np.uint8)).save(survey_dir / "screenshot.png")
    Image.fromarray((orbited * 255).round().astype(np.uint8)).save(survey_dir / "orbited.png")
    m = frame_measures(shot)
    # Measured at 640x480: half the frame filled (a 3:2 survey seen 70° from above in a 4:3 window), every
    # field 8-14% of it and the roads 6%, edges on ~4% of pixels (the same after the orbit). A close-up of
    # one field edge shows one or two fields; a blur, hardly any edges; an empty sky, nothing lit.
    assert m["filled"] > 0.45, m
    assert min(m[q] for q in FIELD_COLOURS) > 0.05, f"not every field is in view: {m}"
    assert m["road"] > 0.015, m
    assert m["edges"] > 0.025, f"no detail: a blur? {m}"
    assert turned is True
    assert up == pytest.approx([0, 1, 0], abs=1e-6)
    # A horizontal drag orbits about the vertical: the camera keeps its height and goes round.
    assert after[1] == pytest.approx(before[1], abs=0.02 * abs(before[1]) + 0.05), (before, after)
    assert np.hypot(after[0] - before[0], after[2] - before[2]) > 1.0, (before, after)
    assert frame_measures(orbited)["filled"] > 0.5


def camera_position(browser: Chromium) -> list[float]:
    return browser.evaluate("(() => { const p = window.spaceportViewer.app.root.findByName('camera').getPosition();"
                            " return [p.x, p.y, p.z]; })()")


def settled_camera_position(browser: Chromium, timeout: float = 20.0) -> list[float]:
    """The camera's position once the orbit has eased out (two reads 0.25 s apart agree)."""
    deadline = time.monotonic() + timeout
    last = camera_position(browser)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = camera_position(browser)
        if np.allclose(now, last, atol=1e-4):
            return now
        last = now
    return last


def drag(browser: Chromium, start: tuple[int, int], end: tuple[int, int], steps: int = 12) -> None:
    x0, y0 = start
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
    browser.call("Input.dispatchMouseEvent", type="mousePressed", x=x0, y=y0, button="left", buttons=1, clickCount=1)
    for i in range(1, steps + 1):
        x = x0 + (end[0] - x0) * i / steps
        y = y0 + (end[1] - y0) * i / steps
        browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
        time.sleep(0.03)
    browser.call("Input.dispatchMouseEvent", type="mouseReleased", x=end[0], y=end[1], button="left", buttons=0,
                 clickCount=1)

