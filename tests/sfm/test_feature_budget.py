"""Large sets keep fewer features per image, so the mappers' memory (which grows with every feature they hold) stays
bounded; small sets keep sfm.maxFeatures."""

from __future__ import annotations

from pathlib import Path

import pycolmap
import pytest

from spaceport.api.sfm import SfmOptions
from spaceport.stages.sfm import reconstruct
from spaceport.stages.sfm.inputs import find_images, prepare_photos
from spaceport.stages.sfm.reconstruct import MIN_FEATURES_PER_IMAGE, features_per_image
from spaceport.storage import open_store
from spaceport.synthetic import generate_flight


def test_the_budget_shares_features_among_large_sets_only() -> None:
    opts = SfmOptions()  # 8,192 per image, 8,000,000 over all
    assert features_per_image(opts, 3) == features_per_image(opts, 976) == 8192
    assert features_per_image(opts, 1000) == 8000
    assert features_per_image(opts, 4000) == 2000
    # past budget / floor images the floor holds (memory then grows with the images again)
    assert features_per_image(opts, 20_000) == MIN_FEATURES_PER_IMAGE
    # a cap set below the floor is kept whatever the size
    assert features_per_image(SfmOptions(max_features=512), 20_000) == 512
    assert features_per_image(SfmOptions(feature_budget=1_000_000), 500) == 2000


def test_extraction_keeps_the_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flight = generate_flight(tmp_path / "photos", n_images=8, width=320, height=240, seed=3)
    store = open_store(str(flight.out_dir))
    photos, _ = prepare_photos(store, find_images(store), tmp_path / "prepared", 320)
    monkeypatch.setattr(reconstruct, "MIN_FEATURES_PER_IMAGE", 100)

    def features(budget: int) -> list[int]:
        database = tmp_path / f"{budget}.db"
        reconstruct.extract(database, tmp_path / "prepared", photos, SfmOptions(feature_budget=budget))
        db = pycolmap.Database.open(database)
        try:
            return [db.num_keypoints_for_image(im.image_id) for im in db.read_all_images()]
        finally:
            db.close()

    unbounded = features(8_000_000)
    shared = features(8 * 150)  # 150 each
    # COLMAP caps the keypoints it detects; each keeps up to two orientations, so up to two features
    assert len(shared) == 8 and max(shared) <= 2 * 150
    assert min(unbounded) > 2 * 150, "these photos find more features than the share, or the test shows nothing"
