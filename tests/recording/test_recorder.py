"""Recorder: a run recorded as it happens becomes a BIDS run with the same voxels, events and derivatives."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.recording import Recorder, RecordingError, bids_run_source
from rtcontrol.recording.journal import read_journal
from rtcontrol.scanner.synth import SynthRun
from tests.support.recording import record, run_settings


def test_round_trip_voxels_geometry_and_sidecar(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run)
    bold = rec.finish()
    assert bold == tmp_path / "bids/sub-01/ses-01/func/sub-01_ses-01_task-nf_run-01_bold.nii.gz"
    assert rec.errors == [] and rec.written_volumes == 12
    img = nib.load(bold)
    assert img.shape == (16, 16, 10, 12)
    np.testing.assert_array_equal(np.asarray(img.dataobj.get_unscaled()), synth_run.data)
    assert img.get_data_dtype() == synth_run.data.dtype
    np.testing.assert_allclose(img.affine, synth_run.affine, atol=1e-5)
    assert img.header.get_zooms()[3] == pytest.approx(1.0)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    side = json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())
    assert side["TaskName"] == "nf" and side["RepetitionTime"] == 1.0
    assert side["SliceTiming"] == pytest.approx(list(synth_run.slice_times))
    assert side["NumberOfVolumes"] == 12
    assert bids_run_source(tmp_path / "bids", "01", "01", "nf", 1) == bold
    assert bids_run_source(tmp_path / "bids", "sub-01", "ses-01", "task-nf", "run-01") == bold
    with pytest.raises(FileNotFoundError, match="found: sub-01_ses-01_task-nf_run-01_bold.nii.gz"):
        bids_run_source(tmp_path / "bids", "01", "01", "nf", 2)


def test_events_and_derivatives(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run)
    bold = rec.finish()
    func = bold.parent
    rows = [line.split("\t") for line in (func / "sub-01_ses-01_task-nf_run-01_events.tsv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    assert header[:4] == ["onset", "duration", "trial_type", "value"]
    feedback = [r for r in body if r[2] == "feedback"]
    responses = [r for r in body if r[2] == "response"]
    assert len(feedback) == 12 and len(responses) == 1
    assert [float(r[0]) for r in body] == sorted(float(r[0]) for r in body)
    assert {r[header.index("stage")] for r in feedback} == {"displayed"}
    by_volume = {int(r[header.index("volume")]): r for r in feedback}
    assert by_volume[5][3] == "0.5" and json.loads(by_volume[2][3]) == {"bar": 0.2}
    assert responses[0][3] == "left" and responses[0][header.index("volume")] == "4"

    deriv = tmp_path / "bids/derivatives/rtcontrol/sub-01/ses-01/func"
    lines = (deriv / "sub-01_ses-01_task-nf_run-01_desc-confounds_timeseries.tsv").read_text().splitlines()
    cols = lines[0].split("\t")
    assert cols[:4] == ["volume", "global_signal", "dvars", "feedback"]
    assert {"tx", "rz", "framewise_displacement", "roi_mean"} <= set(cols)
    table = [dict(zip(cols, line.split("\t"))) for line in lines[1:]]
    truth = np.asarray(synth_run.truth["motion"]["params"])
    assert [float(r["tx"]) for r in table] == pytest.approx(truth[:, 0], abs=1e-6)
    assert float(table[0]["framewise_displacement"]) == 0.0 and float(table[5]["framewise_displacement"]) > 0
    real = synth_run.data.astype(np.float64)
    assert float(table[3]["global_signal"]) > 0 and table[0]["dvars"] == "n/a"
    assert float(table[0]["global_signal"]) < real[..., 0].max()

    timeline = (deriv / "sub-01_ses-01_task-nf_run-01_desc-timeline_timeseries.tsv").read_text().splitlines()
    tcols = timeline[0].split("\t")
    assert tcols[:3] == ["volume", "acquisition_time", "file_seen"] and "displayed" in tcols and len(timeline) == 13
    first = dict(zip(tcols, timeline[1].split("\t")))
    assert float(first["displayed"]) >= float(first["file_seen"]) >= 0
    runlog = json.loads((deriv / "sub-01_ses-01_task-nf_run-01_desc-runlog.json").read_text())
    assert runlog["volumes"] == {"recorded": 12, "first_index": 0, "missing": []}
    assert runlog["recovered_after_interruption"] is False
    assert any(e["kind"] == "note" and e["data"] == {"volume": 3} for e in runlog["events"])
    assert "tsnr_median" in runlog["summary"]


def test_nothing_identifying_or_secret_is_written(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(1, 12))
    v = synth_run.to_volume(0, run="r1")
    # a header replaced after construction skips Volume's own cleaning: the recorder cleans it again
    v.header = {"Manufacturer": "Siemens", "PatientName": "DOE^JANE", "PatientBirthDate": "19700101"}
    rec.record_volume(v)
    bad = "/export/DOE^JANE_19700101/IM-0099.dcm"
    rec.record_event("file_error", f"{bad}: not a DICOM file", path=bad, reason="not a DICOM file")
    bold = rec.finish()
    assert json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())["Manufacturer"] == "Siemens"
    # the BIDS dataset (what leaves the console) holds no name, date, secret or local folder ...
    for path in [p for p in (tmp_path / "bids").rglob("*") if p.is_file() and not p.name.endswith(".gz")]:
        text = path.read_text()
        for secret in ("DOE^JANE", "19700101", "tok-SECRET", "/export/"):
            assert secret not in text, f"{secret!r} leaked into {path}"
    header = nib.load(bold).header
    assert b"DOE" not in header["descrip"].tobytes() and b"DOE" not in header["db_name"].tobytes()
    runlog = json.loads(next(tmp_path.rglob("*desc-runlog.json")).read_text())
    error = next(e for e in runlog["events"] if e["kind"] == "file_error")
    assert error["message"] == ".../IM-0099.dcm: not a DICOM file" and error["data"] == {"reason": "not a DICOM file"}
    # ... and the console's own run folder keeps no secret either
    for path in (tmp_path / "run").iterdir():
        assert b"tok-SECRET" not in path.read_bytes()
    settings = json.loads((tmp_path / "run/run.json").read_text())["settings"]
    assert settings["run"]["subject"] == "01" and "watch_folder" not in settings["run"]
    assert settings["project"]["settings"] == {"roi_threshold": 2.5} and "token" not in settings["worker"]


def test_existing_run_is_never_overwritten(tmp_path: Path, synth_run: SynthRun) -> None:
    first = Recorder(tmp_path / "a", run_settings())
    record(first, synth_run, indices=range(3))
    bold1 = first.finish()
    before = bold1.read_bytes()
    second = Recorder(tmp_path / "b", run_settings())
    record(second, synth_run, indices=range(4))
    bold2 = second.finish()
    assert bold2.name == "sub-01_ses-01_task-nf_run-02_bold.nii.gz"
    assert bold1.read_bytes() == before and nib.load(bold2).shape[-1] == 4
    runlog = json.loads(next((tmp_path / "bids/derivatives").rglob("*run-02_desc-runlog.json")).read_text())
    assert runlog["requested_run"] == 1 and runlog["written_run"] == 2 and "already existed" in runlog["note"]
    assert (tmp_path / "bids/participants.tsv").read_text() == "participant_id\nsub-01\n"


def test_a_missing_volume_leaves_a_gap_not_a_shift(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=[0, 1, 2, 4, 5])
    data = np.asarray(nib.load(rec.finish()).dataobj)
    assert data.shape[-1] == 6
    np.testing.assert_array_equal(data[..., 4], synth_run.data[..., 4])
    assert not data[..., 3].any()
    runlog = json.loads(next(tmp_path.rglob("*desc-runlog.json")).read_text())
    assert runlog["volumes"]["missing"] == [3]


def test_one_recorder_per_folder(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(2))
    rec.close()
    with pytest.raises(RecordingError, match="already holds a recorded run"):
        Recorder(tmp_path / "run", run_settings())
    with pytest.raises(RecordingError, match="closed"):
        rec.record_event("late", "after the end")


def test_finish_without_volumes_says_so(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    rec.record_event("note", "scanner never started")
    with pytest.raises(RecordingError, match="no volume was recorded"):
        rec.finish()
    assert [r["kind"] for r in read_journal(tmp_path / "run").of_type("event")] == ["note", "stop"]


async def test_afinish_from_the_event_loop(tmp_path: Path, synth_run: SynthRun) -> None:
    rec = Recorder(tmp_path / "run", run_settings())
    record(rec, synth_run, indices=range(3))
    bold = await rec.afinish()
    assert nib.load(bold).shape[-1] == 3


def test_project_metrics_named_like_a_confounds_column_are_kept_apart(tmp_path: Path, synth_run: SynthRun) -> None:
    """The searchlight project reports a metric 'feedback': the table had two 'feedback' columns (invalid TSV)."""
    rec = Recorder(tmp_path / "run", run_settings())
    for i in range(3):
        v = synth_run.to_volume(i, run="r1")
        rec.record_volume(v)
        rec.record_feedback("r1", i, i / 10, {"feedback": 5.0 + i, "volume": 7.0, "tx": 0.5, "roi": 1.0}, v.timeline)
    rec.finish()
    deriv = tmp_path / "bids/derivatives/rtcontrol/sub-01/ses-01/func"
    lines = (deriv / "sub-01_ses-01_task-nf_run-01_desc-confounds_timeseries.tsv").read_text().splitlines()
    cols = lines[0].split("\t")
    assert len(cols) == len(set(cols)), cols
    assert {"project_feedback", "project_volume", "tx", "roi"} <= set(cols)  # tx alone (no full motion): a metric
    rows = [dict(zip(cols, line.split("\t"))) for line in lines[1:]]
    assert [r["feedback"] for r in rows] == ["0", "0.1", "0.2"] and [r["volume"] for r in rows] == ["0", "1", "2"]
    assert [r["project_feedback"] for r in rows] == ["5", "6", "7"] and rows[0]["project_volume"] == "7"
    assert rows[2]["tx"] == "0.5"
    sidecar = json.loads((deriv / "sub-01_ses-01_task-nf_run-01_desc-confounds_timeseries.json").read_text())
    assert list(sidecar) == cols and "renamed" in sidecar["project_feedback"]["Description"]
