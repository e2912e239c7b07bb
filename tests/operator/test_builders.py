"""Pure parts of the controller: names, Job builder, status machine, settings. No cluster needed."""

from __future__ import annotations

import json

import pytest

from spaceport.api import Phase, Reason, ReconstructionSpec, ReconstructionStatus
from spaceport.contract import ProgressRecord, StageResult
from spaceport.controller.jobs import Owner, build_job, stage_io
from spaceport.controller.naming import MAX_NAME, job_name
from spaceport.controller.observe import JobView, Observation
from spaceport.controller.settings import DEFAULT_STAGE_IMAGE, OperatorSettings, SettingsError
from spaceport.controller.status import merge_patch, next_status, start_run

OWNER = Owner(name="site", namespace="surveys", uid="u-1")
SETTINGS = OperatorSettings(stage_image="stage:1", job_ttl_seconds=3600)


def s3_spec(**extra: object) -> ReconstructionSpec:
    return ReconstructionSpec.model_validate({
        "input": {"uri": "s3://photos/site", "credentialsSecret": "creds"},
        "output": {"uri": "s3://results/site/", "credentialsSecret": "creds"}, **extra})


def test_job_names_are_deterministic_and_fit_63_chars() -> None:
    assert job_name("site", 3, "train") == "site-r3-train"
    long = "a" * 100
    name = job_name(long, 12, "compress")
    assert len(name) <= MAX_NAME and name.endswith("-r12-compress")
    assert name == job_name(long, 12, "compress") != job_name("a" * 99 + "b", 12, "compress")


def test_sfm_job_for_s3() -> None:
    job = build_job(OWNER, s3_spec(retries=4), 2, "sfm", SETTINGS)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "site-r2-sfm"
    assert job["metadata"]["labels"]["spaceport.dev/run"] == "2"
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "spaceport.dev/v1alpha1", "kind": "Reconstruction", "name": "site", "uid": "u-1",
        "controller": True, "blockOwnerDeletion": True}]
    assert spec["backoffLimit"] == 4 and spec["ttlSecondsAfterFinished"] == 3600 and spec["suspend"] is False
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["image"] == "stage:1"
    assert container["command"] == ["spaceport", "stage", "sfm"]
    args = container["args"]
    assert args[:4] == ["--input", "s3://photos/site", "--output", "s3://results/site/runs/2/sfm"]
    assert json.loads(args[5]) == s3_spec().stage_options("sfm").to_wire()
    assert container["envFrom"] == [{"secretRef": {"name": "creds"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert all(env[k].startswith("/scratch") for k in ("TMPDIR", "HOME", "NUMBA_CACHE_DIR", "TORCH_EXTENSIONS_DIR"))
    assert pod["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}}]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])


def test_train_job_gets_a_gpu_and_scheduling_from_the_spec() -> None:
    default = build_job(OWNER, s3_spec(), 1, "train", SETTINGS)["spec"]["template"]["spec"]
    assert default["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert default["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert default["containers"][0]["args"][1] == "s3://results/site/runs/1/sfm"

    custom = s3_spec(suspend=True, train={"scheduling": {
        "image": "gpu:2", "nodeSelector": {"pool": "a100"}, "activeDeadlineSeconds": 7200,
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "resources": {"limits": {"nvidia.com/gpu": 2}}}})
    job = build_job(OWNER, custom, 1, "train", SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["suspend"] is True and job["spec"]["activeDeadlineSeconds"] == 7200
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["containers"][0]["image"] == "gpu:2"
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 2}}


def test_volume_paths_are_mounted_and_mapped() -> None:
    spec = ReconstructionSpec.model_validate({
        "input": {"uri": "photos/site-42", "volumeClaim": "photos"},
        "output": {"uri": "/results/site-42", "volumeClaim": "results"}})
    assert stage_io(spec, 1, "sfm") == ("/mnt/spaceport/input/photos/site-42",
                                        "/mnt/spaceport/output/results/site-42/runs/1/sfm")
    assert stage_io(spec, 1, "compress") == ("/mnt/spaceport/output/results/site-42/runs/1/train",
                                             "/mnt/spaceport/output/results/site-42/runs/1/compress")
    pod = build_job(OWNER, spec, 1, "sfm", SETTINGS)["spec"]["template"]["spec"]
    assert pod["volumes"][1:] == [
        {"name": "input", "persistentVolumeClaim": {"claimName": "photos", "readOnly": True}},
        {"name": "output", "persistentVolumeClaim": {"claimName": "results"}}]
    assert {"name": "input", "mountPath": "/mnt/spaceport/input", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    assert "envFrom" not in pod["containers"][0]
    train = build_job(OWNER, spec, 1, "train", SETTINGS)["spec"]["template"]["spec"]
    assert [v["name"] for v in train["volumes"]] == ["scratch", "output"]  # photos are only sfm's


def job(name: str = "site-r1-sfm", **status: object) -> JobView:
    return JobView.of({"metadata": {"name": name}, "spec": {"suspend": status.pop("suspend", False)},
                       "status": status})


STARTED = start_run(ReconstructionStatus(), s3_spec(), "site", 1, "t0")
RESULT = StageResult(stage="sfm", started_at="t1", finished_at="t2", duration_seconds=5.0,
                     metrics={"images": 9, "registeredImages": 8})


@pytest.mark.parametrize(("observation", "phase", "reason", "stage"), [
    (Observation("sfm", None), Phase.PENDING, Reason.CREATED, "sfm"),
    (Observation("sfm", job(active=1)), Phase.RUNNING, Reason.STAGE_RUNNING, "sfm"),
    (Observation("sfm", job(suspend=True)), Phase.RUNNING, Reason.STAGE_RUNNING, "sfm"),  # spec not suspended
    (Observation("sfm", job(conditions=[{"type": "Complete", "status": "True"}]), result=RESULT),
     Phase.RUNNING, Reason.STAGE_RUNNING, "train"),
    (Observation("sfm", job(conditions=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])),
     Phase.FAILED, Reason.STAGE_FAILED, "sfm"),
])
def test_next_status_table(observation: Observation, phase: Phase, reason: Reason, stage: str) -> None:
    new = next_status(STARTED, s3_spec(), observation, 1, "t3")
    assert (new.phase, new.reason, new.stage) == (phase, reason, stage)


def test_next_status_progress_suspension_and_vanishing() -> None:
    running = next_status(STARTED, s3_spec(), Observation("sfm", job(active=1), progress=ProgressRecord(
        fraction=0.25, message="features", updated="t", eta_seconds=30)), 1, "t1")
    assert running.stages["sfm"].progress == 0.25 and running.progress == 5.0
    suspended = next_status(running, s3_spec(suspend=True), Observation("sfm", job(suspend=True)), 2, "t2")
    assert suspended.phase == Phase.SUSPENDED and suspended.run == 1
    vanished = next_status(running, s3_spec(), Observation("sfm", None), 1, "t3")
    assert vanished.phase == Phase.FAILED and vanished.reason == Reason.JOB_VANISHED
    rescued = next_status(running, s3_spec(), Observation("sfm", None, result=RESULT), 1, "t3")
    assert rescued.stage == "train" and rescued.stages["sfm"].metrics["registeredImages"] == 8


def test_merge_patch_sends_only_differences_and_nulls_removed_keys() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 2, "d": 3}}) == {}
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}, "e": 1}, {"a": 2, "b": {"c": 2}}) == {
        "a": 2, "b": {"d": None}, "e": None}


def test_settings_from_env() -> None:
    settings = OperatorSettings.from_env({"SPACEPORT_STAGE_IMAGE": "img:9", "SPACEPORT_PROGRESS_INTERVAL_S": "2",
                                          "SPACEPORT_DEFAULT_RESOURCES": '{"sfm": {"requests": {"cpu": "1"}}}'})
    assert settings.stage_image == "img:9" and settings.progress_interval_s == 2.0
    assert settings.resources_for("sfm") == {"requests": {"cpu": "1"}}
    assert settings.resources_for("train")["limits"]["nvidia.com/gpu"] == 1
    with pytest.raises(SettingsError, match="SPACEPORT_PROGRESS_INTERVAL_S"):
        OperatorSettings.from_env({"SPACEPORT_PROGRESS_INTERVAL_S": "30"})


def test_stage_pools_and_default_secret_fill_what_the_spec_leaves_open() -> None:
    settings = OperatorSettings.from_env({
        "SPACEPORT_STAGE_POOLS": json.dumps({"train": {"image": "gpu-stage:1", "nodeSelector": {"pool": "gpu"},
                                                       "tolerations": [{"key": "gpu", "operator": "Exists"}]}}),
        "SPACEPORT_DEFAULT_CREDENTIALS_SECRET": "shared-s3"})
    spec = ReconstructionSpec.model_validate({"input": {"uri": "s3://photos/a"}, "output": {"uri": "s3://out/a"}})
    pod = build_job(OWNER, spec, 1, "train", settings)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "gpu-stage:1"
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "shared-s3", "optional": True}}]
    sfm = build_job(OWNER, spec, 1, "sfm", settings)["spec"]["template"]["spec"]
    assert sfm["containers"][0]["image"] == DEFAULT_STAGE_IMAGE and "nodeSelector" not in sfm

    named = build_job(OWNER, s3_spec(train={"scheduling": {"image": "mine:2", "nodeSelector": {"a": "b"}}}), 1,
                      "train", settings)["spec"]["template"]["spec"]
    assert named["containers"][0]["image"] == "mine:2" and named["nodeSelector"] == {"a": "b"}
    assert named["containers"][0]["envFrom"] == [{"secretRef": {"name": "creds"}}]
    with pytest.raises(SettingsError, match="SPACEPORT_STAGE_POOLS"):
        OperatorSettings.from_env({"SPACEPORT_STAGE_POOLS": '{"training": {}}'})


def test_overall_metrics_take_shared_keys_from_the_earlier_stage() -> None:
    from spaceport.api.reconstruction import StageStatus
    from spaceport.controller.status import aggregate_metrics

    stages = {"train": StageStatus(metrics={"psnr": 27.0, "ssim": 0.9, "plyBytes": 1000, "durationSeconds": 5}),
              "compress": StageStatus(metrics={"ssim": 0.99, "sogBytes": 100})}
    metrics = aggregate_metrics(stages)
    assert (metrics.ssim, metrics.psnr, metrics.compression_ratio) == (0.9, 27.0, 10.0)
    assert metrics.durations == {"train": 5.0}
