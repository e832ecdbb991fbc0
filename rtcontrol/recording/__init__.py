"""Recording: every run written as it happens (journal + raw volumes), then as a BIDS dataset.

Public surface::

    Recorder(run_dir, settings, bids_root=None, on_error=None, loop=None)
        .record_volume(volume) / .record_feedback(run, index, feedback, metrics, timeline)
        .record_timeline(run, index, timeline) / .record_response(value, when=None, index=None, **data)
        .record_event(kind, message, **data) / .finish() -> Path / await .afinish() -> Path
    preflight(run_dir, expected_volumes, volume_bytes, bids_root=None) -> Preflight   (raises RecordingError)
    find_interrupted(root) -> list[Path];  summarize(run_dir) -> str;  recover(run_dir, bids_root=None) -> Path
    bids_run_source(bids_dir, sub, ses, task, run) -> Path   (a recorded run's bold, e.g. to replay it)
"""

from rtcontrol.recording.bids import bids_run_source
from rtcontrol.recording.preflight import Preflight, preflight
from rtcontrol.recording.recorder import Recorder, find_interrupted, recover, summarize
from rtcontrol.recording.runinfo import RecordingError

__all__ = [
    "Preflight",
    "Recorder",
    "RecordingError",
    "bids_run_source",
    "find_interrupted",
    "preflight",
    "recover",
    "summarize",
]
