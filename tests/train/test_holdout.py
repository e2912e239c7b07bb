"""Which photos training holds out: by their place among all the photos SfM used (``photos.json``), so a photo
that fails to register does not shift the held-out set of a re-run or of another SfM model of the same folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spaceport.contract import BadInputError
from spaceport.stages.train.data import load_model
from spaceport.storage import LocalStore
from tests.train.fixtures import write_sfm_output


def held_out(root: Path, every: int = 4) -> list[str]:
    model = load_model(LocalStore(root), root / "scratch", holdout_every=every, downscale=1.0)
    return [c.name for c in model.cameras if c.held_out]


def test_a_photo_that_did_not_register_leaves_the_others_held_out_as_before(tmp_path: Path) -> None:
    write_sfm_output(tmp_path, n_views=12)
    registered = sorted(p.name for p in (tmp_path / "images").iterdir())
    # without the list (a model from before it was written): every 4th registered photo
    assert held_out(tmp_path) == registered[::4]
    # the list names one more photo, first in order, that SfM used but could not register
    (tmp_path / "photos.json").write_text(json.dumps(sorted(["a-blurred-one.png", *registered])))
    everything = ["a-blurred-one.png", *registered]
    assert held_out(tmp_path) == [n for i, n in enumerate(everything) if i % 4 == 0 and n in registered]
    assert held_out(tmp_path) != registered[::4]


def test_a_list_that_misses_registered_photos_is_not_used(tmp_path: Path) -> None:
    write_sfm_output(tmp_path, n_views=12)
    registered = sorted(p.name for p in (tmp_path / "images").iterdir())
    (tmp_path / "photos.json").write_text(json.dumps(registered[1:]))
    assert held_out(tmp_path) == registered[::4]


def test_a_broken_list_is_named(tmp_path: Path) -> None:
    write_sfm_output(tmp_path, n_views=6)
    (tmp_path / "photos.json").write_text("[not json")
    with pytest.raises(BadInputError, match=r"photos\.json: not a JSON list"):
        held_out(tmp_path)
