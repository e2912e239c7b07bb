"""The global mapper's speed bound: positioning from a subset of tracks changes neither cameras nor points."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest

from spaceport.api.sfm import SfmOptions
from spaceport.stages.sfm import reconstruct
from spaceport.stages.sfm.inputs import find_images, prepare_photos
from spaceport.storage import open_store
from spaceport.synthetic import Flight, generate_flight
from tests.sfm.geometry import alignment_error


@pytest.fixture(scope="module")
def matched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Flight]:
    """A generated flight's photos, SIFT features and exhaustive matches (a database to map again and again)."""
    root = tmp_path_factory.mktemp("matched")
    flight = generate_flight(root / "photos", n_images=24, width=400, height=300, seed=3)
    store = open_store(str(flight.out_dir))
    photos, failed = prepare_photos(store, find_images(store), root / "prepared", 400)
    assert not failed
    database = root / "database.db"
    reconstruct.extract(database, root / "prepared", photos, SfmOptions(max_image_size=400))
    reconstruct.match(database, "exhaustive", SfmOptions())
    return database, root / "prepared", flight


def _map(database: Path, images: Path, out: Path, tracks_per_view: int,
         monkeypatch: pytest.MonkeyPatch) -> pycolmap.Reconstruction:
    """The stage's global mapping with the flight's exact EXIF focal length held (as on flat ground)."""
    copy = out / "database.db"
    out.mkdir()
    shutil.copy(database, copy)
    with monkeypatch.context() as patch:
        patch.setattr(reconstruct, "POSITIONING_TRACKS_PER_VIEW", tracks_per_view)
        models = reconstruct.map_images(copy, images, out, "global", None, keep_focal=True)
    assert models, "the global mapper found no model"
    return models[0]


def test_positioning_from_a_track_subset_keeps_cameras_and_points(matched: tuple[Path, Path, Flight], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    database, images, flight = matched
    production = reconstruct._global_options().mapper.track_required_tracks_per_view
    assert production == reconstruct.POSITIONING_TRACKS_PER_VIEW
    every = _map(database, images, tmp_path / "all", 2**31 - 1, monkeypatch)
    # this small flight has ~230 tracks per photo: a bound below the production one makes the subset small
    bound = 50
    bounded = _map(database, images, tmp_path / "bounded", bound, monkeypatch)
    sparse_points = len(every.points3D)
    # the bound must really bite on this flight, or the comparison shows nothing
    tracks_per_image = sparse_points * every.compute_mean_track_length() / every.num_reg_images()
    assert tracks_per_image > 4 * bound

    assert bounded.num_reg_images() == every.num_reg_images() == len(flight.image_names)
    # every track is triangulated after positioning: the sparse cloud training starts from is as dense
    assert abs(len(bounded.points3D) - sparse_points) <= 0.02 * sparse_points
    for model in (every, bounded):
        centres = {im.name: np.asarray(im.projection_center()) for im in model.images.values() if im.has_pose}
        _, error = alignment_error(centres, flight)
        assert error < 0.01, f"camera centres {error:.2%} of the flight's extent off the truth"
