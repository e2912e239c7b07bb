"""Status reads the metric names the real stages write: their result.json files go through the status code."""

from __future__ import annotations

from pathlib import Path

from spaceport.api import Phase, ReconstructionSpec, ReconstructionStatus
from spaceport.contract import RESULT_FILE, StageResult
from spaceport.controller import observe as obs
from spaceport.controller import status as st
from spaceport.stages.runner import run_stage
from tests.compress.helpers import small_scene, write_train_output

NOW = "2026-11-25T15:00:00Z"
SPEC = ReconstructionSpec.model_validate({"input": {"uri": "s3://photos/site"}, "output": {"uri": "s3://out/site"}})


def status_from(results: dict[str, StageResult], spec: ReconstructionSpec = SPEC) -> ReconstructionStatus:
    """The status the operator computes when each stage's Job succeeds and its result.json reads as given."""
    status = st.start_run(ReconstructionStatus(), spec, "site", 1, NOW)
    for stage in ("sfm", "train", "compress"):
        job = obs.JobView(name=f"site-r1-{stage}", suspended=False, active=0, succeeded=True, failed=False)
        status = st.next_status(status, spec, obs.Observation(stage, job, result=results.get(stage)), 1, NOW)
    assert status.phase == Phase.SUCCEEDED
    return status


def read(folder: Path) -> StageResult:
    return StageResult.model_validate_json((folder / RESULT_FILE).read_text())


def test_real_sfm_and_compress_results_fill_status_metrics(tmp_path: Path) -> None:
    from spaceport.synthetic import generate_flight

    photos = tmp_path / "photos"
    generate_flight(photos, n_images=8, width=160, height=120, seed=3)
    (photos / "notes.txt").write_text("not a photo")
    run_stage("sfm", str(photos), str(tmp_path / "sfm"), {"maxImageSize": 160})
    train = write_train_output(tmp_path / "train", small_scene(500), cameras=0)
    run_stage("compress", str(train), str(tmp_path / "compress"),
              {"kmeansIterations": 2, "formats": ["sog-unbundled"], "qualityViews": 0})

    sfm, compress = read(tmp_path / "sfm"), read(tmp_path / "compress")
    spec = ReconstructionSpec.model_validate({**SPEC.to_wire(), "compress": {"formats": ["sog-unbundled"]}})
    status = status_from({"sfm": sfm, "compress": compress}, spec)
    m = status.metrics
    assert (m.images, m.registered_images) == (sfm.metrics["imagesUsed"], sfm.metrics["registeredImages"])
    assert m.images == 8 and m.registered_images  # how many register is SfM's business, not status's
    assert m.images_found == sfm.metrics["imagesFound"]
    assert m.sog_bytes == compress.metrics["sogBytes"] and m.sog_bytes > 0
    assert m.compression_ratio == compress.metrics["compressionRatio"]
    # Outputs are the files the stages said they wrote (no .sog bundle: formats left it out)...
    assert "sog" not in status.outputs and status.outputs["sogUnbundled"].endswith("sog/meta.json")
    for name in ("sparse", "images", "sogUnbundled"):
        assert Path(status.outputs[name]).exists(), name
    # ...and every metric status shows came from a key some real stage wrote.
    shown = {f for f, v in m.model_dump(exclude={"durations"}).items() if v is not None}
    assert shown == {"images", "images_found", "registered_images", "ply_bytes", "sog_bytes", "compression_ratio"}
