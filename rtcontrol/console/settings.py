"""Run settings: one TOML file per run, checked on load, saved with every run.

The file has the sections of ``resources/default_run.toml``; anything missing takes the
default, anything unknown or invalid is an error that names the section and key. The model
is immutable: the GUI edits a copy (``dataclasses.replace``) and validates it before a run.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from rtcontrol.errors import RtcontrolError
from rtcontrol.link.certs import normalize_fingerprint
from rtcontrol.paths import resources_dir

#: The words of ``[feedback] onset``; each names a :class:`rtcontrol.subject.protocol.OnsetMode` (``next_tr``
#: is ``NEXT_TR``), which the subject link sends as it is.
ONSET_MODES = ("immediate", "next_tr", "delay")
#: Whose TR a run uses when the scanner's headers and the settings differ (see rtcontrol.console.tr_check).
TR_SOURCES = ("scanner", "settings")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


class SettingsError(RtcontrolError, ValueError):
    """A settings file or value is wrong; the message says which key and why."""


@dataclass(frozen=True)
class RunSection:
    subject: str = "01"
    session: str = "01"
    run: int = 1
    task: str = "feedback"
    tr: float = 2.0
    tr_source: str = "scanner"  # whose TR the run uses when the headers' differs: "scanner" or "settings"
    expected_volumes: int = 0
    end_after_trs: float = 10.0
    watch_folder: str = ""
    polling: bool = False


@dataclass(frozen=True)
class ProjectSection:
    name: str = "template"
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackSection:
    onset: str = "immediate"
    delay: float = 0.0


@dataclass(frozen=True)
class EndpointSection:
    url: str = ""
    token: str = ""
    #: The peer's certificate fingerprint as ``main.py certs`` printed it; when set, only that
    #: certificate is accepted (no first-use prompt, the known_hosts file is not consulted).
    fingerprint: str = ""


@dataclass(frozen=True)
class AfniSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    control_port: int = 7961
    data_port: int = 7960


@dataclass(frozen=True)
class FilesSection:
    allowed_folders: tuple[str, ...] = ()


LEFT_RIGHT = ("radiological", "neurological")


@dataclass(frozen=True)
class DisplaySection:
    """How the console shows the run (the live views' left/right convention, the FD threshold line)."""

    left_right: str = "radiological"
    fd_threshold: float = 0.5


@dataclass(frozen=True)
class RunSettings:
    """Everything a run needs; see ``resources/default_run.toml`` for the meaning of each key."""

    run: RunSection = field(default_factory=RunSection)
    project: ProjectSection = field(default_factory=ProjectSection)
    feedback: FeedbackSection = field(default_factory=FeedbackSection)
    worker: EndpointSection = field(default_factory=EndpointSection)
    subject: EndpointSection = field(default_factory=EndpointSection)
    afni: AfniSection = field(default_factory=AfniSection)
    files: FilesSection = field(default_factory=FilesSection)
    display: DisplaySection = field(default_factory=DisplaySection)

    # --- identity -----------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """The BIDS-style name of this run, e.g. ``sub-01_ses-01_task-feedback_run-01``."""
        r = self.run
        return f"sub-{r.subject}_ses-{r.session}_task-{r.task}_run-{r.run:02d}"

    def without_secrets(self) -> RunSettings:
        """A copy fit for a run's record: the access tokens are blanked (they stay in the operator's
        own settings file, the command line or ``RTCONTROL_WORKER_TOKEN`` / ``RTCONTROL_SUBJECT_TOKEN``)."""
        return replace(self, worker=replace(self.worker, token=""), subject=replace(self.subject, token=""))

    def next_run(self) -> RunSettings:
        """The same settings with the run number counted up."""
        return replace(self, run=replace(self.run, run=self.run.run + 1))

    def with_values(self, section: str, **values: Any) -> RunSettings:
        """A copy with some keys of one section changed, validated."""
        new = replace(self, **{section: replace(getattr(self, section), **values)})
        new.validate()
        return new

    # --- checks -------------------------------------------------------------------------
    def validate(self) -> RunSettings:
        """Raise :class:`SettingsError` naming the first wrong key; return self when all is well."""
        r = self.run
        for key in ("subject", "session", "task"):
            value = getattr(r, key)
            if not _LABEL.match(value):
                raise SettingsError(f"[run] {key} = {value!r}: use letters and digits only (a BIDS label)")
        if r.run < 1:
            raise SettingsError(f"[run] run = {r.run}: the run number starts at 1")
        if not 0.05 <= r.tr <= 60:
            raise SettingsError(f"[run] tr = {r.tr}: the repetition time must be between 0.05 and 60 seconds")
        if r.tr_source not in TR_SOURCES:
            raise SettingsError(f"[run] tr_source = {r.tr_source!r}: one of {', '.join(TR_SOURCES)}")
        if r.expected_volumes < 0:
            raise SettingsError(f"[run] expected_volumes = {r.expected_volumes}: use 0 for unknown, or a count")
        if r.end_after_trs <= 0:
            raise SettingsError(f"[run] end_after_trs = {r.end_after_trs}: must be more than 0")
        if not self.project.name:
            raise SettingsError("[project] name is empty: choose a project installed on the worker")
        if self.feedback.onset not in ONSET_MODES:
            raise SettingsError(f"[feedback] onset = {self.feedback.onset!r}: one of {', '.join(ONSET_MODES)}")
        if self.feedback.delay < 0:
            raise SettingsError(f"[feedback] delay = {self.feedback.delay}: a delay cannot be negative")
        if self.feedback.onset == "delay" and self.feedback.delay > 10 * r.tr:
            raise SettingsError(
                f"[feedback] delay = {self.feedback.delay} s is more than ten TRs ({10 * r.tr:g} s): "
                "feedback would arrive long after the volume"
            )
        for name in ("worker", "subject"):
            url = getattr(self, name).url
            if url and not url.startswith(("wss://", "ws://")):
                raise SettingsError(f"[{name}] url = {url!r}: use wss://host:port (or leave empty for a local one)")
            fingerprint = getattr(self, name).fingerprint
            if fingerprint:
                try:
                    normalize_fingerprint(fingerprint)
                except ValueError:
                    raise SettingsError(
                        f"[{name}] fingerprint = {fingerprint!r}: not a SHA-256 fingerprint (64 hex digits, "
                        "as 'main.py certs' prints it: SHA256:AB:CD:...)") from None
        for key in ("control_port", "data_port"):
            port = getattr(self.afni, key)
            if not 1 <= port <= 65535:
                raise SettingsError(f"[afni] {key} = {port}: not a TCP port (1-65535)")
        if self.display.left_right not in LEFT_RIGHT:
            raise SettingsError(f"[display] left_right = {self.display.left_right!r}: one of {', '.join(LEFT_RIGHT)}")
        if not self.display.fd_threshold > 0:
            raise SettingsError(f"[display] fd_threshold = {self.display.fd_threshold}: must be more than 0 mm")
        return self

    # --- TOML ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"]["allowed_folders"] = list(self.files.allowed_folders)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "settings") -> RunSettings:
        sections = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise SettingsError(f"{where}: unknown section(s) [{'], ['.join(unknown)}]; known: {', '.join(sections)}")
        built: dict[str, Any] = {}
        for name, f in sections.items():
            factory = f.default_factory
            if not callable(factory):  # each section is a field with a default_factory
                raise TypeError(f"RunSettings.{name} has no default_factory")
            section_cls = factory().__class__
            built[name] = _section(section_cls, name, data.get(name, {}), where)
        try:
            return cls(**built).validate()
        except SettingsError as exc:
            raise SettingsError(f"{where}: {exc}") from None


def _section(section_cls: type, name: str, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: [{name}] must be a table of keys, not {type(data).__name__}")
    defaults = section_cls()
    known = {f.name for f in fields(section_cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"{where}: [{name}] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        values[key] = _coerce(value, default, f"{where}: [{name}] {key}")
    return section_cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Convert a TOML value to the type of the default, or say what is wrong."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise SettingsError(f"{where} = {value!r}: use true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} = {value!r}: use a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} = {value!r}: use a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise SettingsError(f"{where} = {value!r}: use a quoted text")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} = {value!r}: use a list of quoted paths")
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise SettingsError(f"{where} = {value!r}: use a table")
        return dict(value)
    return value


def load(path: Path | str) -> RunSettings:
    """Read and check a settings file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError(f"{path}: no such settings file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    return RunSettings.from_dict(data, where=str(path))


def save(settings: RunSettings, path: Path | str) -> Path:
    """Write settings as TOML (atomically: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(tomli_w.dumps(settings.to_dict()).encode("utf-8"))
    tmp.replace(path)
    return path


def demo_settings_path() -> Path:
    """Settings of the simulated scan (``resources/demo_run.toml``)."""
    return resources_dir() / "demo_run.toml"


def demo_settings() -> RunSettings:
    """The simulated scan's settings, or the defaults if the file is missing."""
    path = demo_settings_path()
    return load(path) if path.is_file() else default_settings()


def default_settings() -> RunSettings:
    """The shipped defaults (``resources/default_run.toml``), or the built-in ones if it is missing."""
    path = resources_dir() / "default_run.toml"
    return load(path) if path.is_file() else RunSettings()
