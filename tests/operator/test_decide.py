"""The decision table: (stage phase x observation) -> (next phase and reason, actions). Pure: no cluster."""

from __future__ import annotations

import pytest

from spaceport.api import FailureRecord, Phase, Reason, ReconstructionSpec, ReconstructionStatus
from spaceport.api.reconstruction import Notify as NotifySpec
from spaceport.contract import StageResult, parse_termination
from spaceport.controller import decide
from spaceport.controller.decide import ClaimOutput, CreateJob, DeleteJob, DeleteJobs, Notify, PatchSuspend
from spaceport.controller.observe import JobView, Observation, SecretView
from spaceport.controller.progress import OutputView
from spaceport.controller.status import start_run

NOW = "2026-01-01T00:00:00Z"


def spec(**extra: object) -> ReconstructionSpec:
    return ReconstructionSpec.model_validate({
        "input": {"uri": "s3://photos/site", "credentialsSecret": "creds"},
        "output": {"uri": "s3://results/site"}, **extra})


def at(phase: Phase, run: int = 1, **extra: object) -> ReconstructionStatus:
    """A run of ``spec(**extra)`` whose sfm stage is in ``phase``."""
    status = start_run(ReconstructionStatus(run=run - 1), spec(**extra), "site", 1, NOW)
    stages = {**status.stages, "sfm": status.stages["sfm"].model_copy(update={"phase": phase})}
    return status.model_copy(update={"stages": stages, "phase": phase})


def job(active: int = 1, suspended: bool = False, done: bool = False, failed: bool = False) -> JobView:
    return JobView("site-r1-sfm", suspended, active, succeeded=done, failed=failed)


KEYS = SecretView("default", "creds", "spec.input.credentialsSecret", frozenset({"AWS_ACCESS_KEY_ID",
                                                                                  "AWS_SECRET_ACCESS_KEY"}))
MISSING = SecretView("default", "creds", "spec.input.credentialsSecret", None)
NO_KEYS = SecretView("default", "creds", "spec.input.credentialsSecret", frozenset({"token"}))
RESULT = StageResult(stage="sfm", started_at="t1", finished_at="t2", duration_seconds=5.0,
                     metrics={"imagesUsed": 9})
IN_USE = FailureRecord(stage="sfm", reason="OutputInUse", message="spec.output.uri: belongs to another")
Q = {"queueName": "gpu"}
SUSPEND = {"suspend": True}

ROWS = [
    # id, sfm phase, spec extras, observation, (phase, reason, current stage), actions
    ("pending: create", Phase.PENDING, {}, Observation("sfm", None, secret=KEYS),
     (Phase.PENDING, Reason.CREATED, "sfm"), (CreateJob("sfm"),)),
    ("pending: secret missing", Phase.PENDING, {}, Observation("sfm", None, secret=MISSING),
     (Phase.PENDING, Reason.WAITING_FOR_SECRET, "sfm"), ()),
    ("pending: secret without keys", Phase.PENDING, {}, Observation("sfm", None, secret=NO_KEYS),
     (Phase.FAILED, Reason.BAD_CREDENTIALS, "sfm"), ()),
    ("pending, queued run suspended: held", Phase.PENDING, {**Q, **SUSPEND}, Observation("sfm", None, queue="gpu"),
     (Phase.SUSPENDED, Reason.SUSPENDED, "sfm"), ()),
    ("running", Phase.RUNNING, {}, Observation("sfm", job()), (Phase.RUNNING, Reason.STAGE_RUNNING, "sfm"), ()),
    ("running, spec suspends", Phase.RUNNING, SUSPEND, Observation("sfm", job()),
     (Phase.SUSPENDED, Reason.SUSPENDED, "sfm"), (PatchSuspend("site-r1-sfm", True),)),
    ("suspended, spec resumes", Phase.SUSPENDED, {}, Observation("sfm", job(suspended=True)),
     (Phase.RUNNING, Reason.STAGE_RUNNING, "sfm"), (PatchSuspend("site-r1-sfm", False),)),
    ("queued: Kueue holds it", Phase.QUEUED, Q, Observation("sfm", job(0, suspended=True), queue="gpu"),
     (Phase.QUEUED, Reason.QUEUED, "sfm"), ()),
    ("running in a queue, spec suspends: Job deleted", Phase.RUNNING, {**Q, **SUSPEND},
     Observation("sfm", job(), queue="gpu"), (Phase.SUSPENDED, Reason.SUSPENDED, "sfm"), (DeleteJob("site-r1-sfm"),)),
    ("held in a queue, spec resumes: created again", Phase.SUSPENDED, Q,
     Observation("sfm", None, queue="gpu", secret=KEYS), (Phase.SUSPENDED, None, "sfm"), (CreateJob("sfm"),)),
    ("succeeded: next stage", Phase.RUNNING, {}, Observation("sfm", job(0, done=True), result=RESULT),
     (Phase.RUNNING, Reason.STAGE_RUNNING, "train"), ()),
    ("failed: output of another", Phase.RUNNING, {}, Observation("sfm", job(0, failed=True), failure=IN_USE),
     (Phase.FAILED, Reason.OUTPUT_IN_USE, "sfm"), ()),
    ("vanished without result", Phase.RUNNING, {}, Observation("sfm", None), (Phase.FAILED, Reason.JOB_VANISHED, "sfm"),
     ()),
    ("vanished after finishing", Phase.RUNNING, {}, Observation("sfm", None, result=RESULT),
     (Phase.RUNNING, Reason.STAGE_RUNNING, "train"), ()),
]


@pytest.mark.parametrize(("phase", "extra", "obs", "expected", "actions"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_stage_decisions(phase: Phase, extra: dict[str, object], obs: Observation,
                         expected: tuple[Phase, Reason | None, str], actions: tuple[decide.Action, ...]) -> None:
    status = at(phase, **extra)
    if expected[1] is None:  # the status stays as it was until the Job exists
        expected = (expected[0], status.reason, expected[2])
    decision = decide.stage(status, spec(**extra), obs, "site", 1, NOW)
    assert (decision.status.phase, decision.status.reason, decision.status.stage) == expected
    assert decision.actions == actions


def test_a_later_run_deletes_the_earlier_runs_jobs_before_creating_its_own() -> None:
    decision = decide.stage(at(Phase.PENDING, run=3), spec(), Observation("sfm", None), "site", 1, NOW)
    assert decision.actions == (DeleteJobs(keep_run=3), CreateJob("sfm"))


def test_an_invalid_spec_stops_the_run_once() -> None:
    first = decide.invalid(at(Phase.RUNNING), "spec.input: missing", 2, NOW)
    assert (first.status.phase, first.status.reason, first.actions) == (Phase.FAILED, Reason.INVALID_SPEC,
                                                                        (DeleteJobs(None),))
    assert first.write == "last" and first.final
    again = decide.invalid(first.status, "spec.input: missing", 2, NOW)
    assert again == decide.Decision(first.status, final=True)


def test_a_new_run_claims_an_unowned_output_and_numbers_past_its_folders() -> None:
    fresh = decide.start(ReconstructionStatus(), spec(), "default", "site", 1, NOW,
                         OutputView("s3://results/site", None, (1, 4)))
    assert fresh.status.run == 5 and fresh.actions == (ClaimOutput(),) and fresh.write == "last"
    mine = decide.start(ReconstructionStatus(), spec(), "default", "site", 1, NOW,
                        OutputView("s3://results/site", {"namespace": "default", "name": "site"}))
    assert mine.status.run == 1 and mine.actions == ()
    theirs = decide.start(ReconstructionStatus(), spec(), "default", "site", 1, NOW,
                          OutputView("s3://results/site", {"namespace": "other", "name": "x", "uid": "9"}))
    assert (theirs.status.phase, theirs.status.reason) == (Phase.FAILED, Reason.OUTPUT_IN_USE)
    assert theirs.actions == (DeleteJobs(None),) and "belongs to Reconstruction other/x" in theirs.status.message


def test_a_finished_run_is_settled_and_notified_once() -> None:
    with_hook = spec(notify=NotifySpec(url="http://hook").to_wire())
    done = at(Phase.SUCCEEDED, notify=with_hook.notify.to_wire())
    done = done.model_copy(update={"phase": Phase.SUCCEEDED, "observed_generation": 1})
    assert decide.settled(done, with_hook, None, 1) == decide.Decision(done, (Notify(1),), final=True)
    assert decide.settled(done, with_hook, "again", 1) is None  # a retry asked for: not settled
    assert decide.settled(done, with_hook, None, 2) is None  # a new generation: look again
    notified = ReconstructionStatus.model_validate({**done.to_wire(), "notification": {"run": 1,
                                                                                      "phase": "Succeeded"}})
    assert decide.settled(notified, with_hook, None, 1).actions == ()
    final = decide.finish(done, with_hook, decide.Prices(), NOW)
    assert final.actions == (Notify(1),) and final.write == "first"


def test_a_run_folder_holding_other_inputs_files_moves_the_run_to_the_next_free_number() -> None:
    """A re-created Reconstruction on a volume: the stage saw runs/1 holding other inputs' files and runs/3 the
    highest folder there; the run starts again at 4 (named in status before its Job exists), nothing deleted."""
    wire = FailureRecord(stage="sfm", reason="StaleOutput", message="runs/1/sfm holds a result of other options",
                         next_run=4).to_json()
    stale = parse_termination(wire, succeeded=False)
    assert isinstance(stale, FailureRecord) and stale.next_run == 4 and '"nextRun": 4' in wire
    moved = decide.moved(at(Phase.RUNNING), spec(), Observation("sfm", job(0, failed=True), failure=stale), "site", 2,
                         NOW)
    assert moved is not None and moved.write == "first" and moved.actions == ()
    new = moved.status
    assert (new.run, new.phase, new.stage, new.observed_generation) == (4, Phase.PENDING, "sfm", 2)
    assert new.run_uri == "s3://results/site/runs/4" and new.stages["sfm"].job == "site-r4-sfm"
    assert new.message == ("run 4 started: s3://results/site/runs/1 holds sfm files made from other inputs, kept as "
                           "they are")
    # Without a number (a stage image from before), or one not past this run, the run fails as before.
    for record in (stale.model_copy(update={"next_run": None}), stale.model_copy(update={"next_run": 1}), IN_USE):
        obs = Observation("sfm", job(0, failed=True), failure=record)
        assert decide.moved(at(Phase.RUNNING), spec(), obs, "site", 1, NOW) is None
        assert decide.stage(at(Phase.RUNNING), spec(), obs, "site", 1, NOW).status.phase == Phase.FAILED
