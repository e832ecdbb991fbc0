"""A stand-in for AFNI's realtime plugin that follows plug_realtime's rules (spec sections 3-9).

It listens on the control port, reads the control socket to EOF, stops listening on the
control port while a run is active, listens on the port named in the control string (or
attaches to the named shm segment), reads the metadata block as AFNI does (one read, then
more only while bytes keep coming within 1 ms; abort without a NUL), parses it with AFNI's
prefix-matching rules and defaults, assembles whole images, handles the end-of-run image,
and builds the dataset's world geometry from XYFOV/XYZAXES/XYZFIRST/OBLIQUE_XFORM exactly as
RT_start_dataset does (DICOM/LPS internally). Blocking sockets in a thread: independent of
the sender's event loop, as a real AFNI is.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from rtcontrol.afni.protocol import END_OF_RUN
from rtcontrol.afni.shm import ShmReader

INFO_SIZE = 32 * 1024
#: plug_realtime's commands in the order RT_process_info tests them (prefix match).
COMMANDS = (
    "ACQUISITION_TYPE", "GRAPH_XRANGE", "GRAPH_YRANGE", "GRAPH_EXPR", "PREFIX", "NAME", "NOTE",
    "NUMVOL", "TR", "ZDELTA", "ZGAP", "XYZOFF", "ZFIRST", "XYZFIRST", "XYFOV", "XYMATRIX", "ZNUM",
    "DATUM", "BYTEORDER", "LOCK_ZORDER", "ZORDER", "TPATTERN", "XYZAXES", "NUM_CHAN",
    "OBLIQUE_XFORM", "DRIVE_AFNI", "DRIVE_WAIT", "ECHO_TIMES",
)  # fmt: skip
ACQ_TYPES = ("2D+z", "2D+zt", "3D", "3D+t", "3D+timing")
DATUM_BYTES = {"byte": 1, "short": 2, "float": 4, "double": 8, "complex": 8, "rgb": 3}
DATUM_DTYPE = {"byte": "u1", "short": "i2", "float": "f4", "double": "f8", "complex": "c8"}
# orientation code -> (DICOM axis 0=x(R->L) 1=y(A->P) 2=z(I->S), sign of delta, first letter)
ORIENT = {
    "R-L": (0, +1), "L-R": (0, -1), "A-P": (1, +1), "P-A": (1, -1), "I-S": (2, +1), "S-I": (2, -1),
}  # fmt: skip
ORIENT_ALIASES = {
    "RL": "R-L", "LR": "L-R", "AP": "A-P", "PA": "P-A", "IS": "I-S", "SI": "S-I",
    "RIGHT-TO-LEFT": "R-L", "LEFT-TO-RIGHT": "L-R", "ANTERIOR-TO-POSTERIOR": "A-P",
    "POSTERIOR-TO-ANTERIOR": "P-A", "INFERIOR-TO-SUPERIOR": "I-S", "SUPERIOR-TO-INFERIOR": "S-I",
}  # fmt: skip
AXIS_LETTERS = ("RL", "AP", "IS")
_NUM_LETTER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)([A-Za-z]?)")


def _floats(text: str) -> list[float]:
    out = []
    for tok in text.split():
        try:
            out.append(float(tok))
        except ValueError:
            break
    return out


@dataclass
class AfniRun:
    """One acquisition as AFNI would store it."""

    header_bytes: bytes
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    partial: bytes = b""
    ended_by_marker: bool = False
    image_times: list[float] = field(default_factory=list)  # perf_counter when each image completed

    # -- AFNI's RT_check_info / RT_start_dataset --------------------------------------------
    @property
    def complete(self) -> bool:
        i = self.info
        nz = i.get("nz", 0)
        dz_ok = i.get("dz", 0) > 0 or i.get("fz", 0) > 0
        axes = i.get("axes")
        return bool(
            i.get("acq") in ACQ_TYPES
            and i.get("tr", 1.0) > 0
            and dz_ok
            and i.get("fx", 0) > 0
            and i.get("fy", 0) > 0
            and i.get("nx", 0) > 1
            and i.get("ny", 0) > 1
            and nz >= 1
            and i.get("datum") in DATUM_BYTES
            and axes is not None
            and len({ORIENT[a][0] for a in axes}) == 3
            and (i.get("tpattern_times") is None or len(i["tpattern_times"]) == nz)
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.info["nx"], self.info["ny"], self.info["nz"])

    @property
    def imsize(self) -> int:
        nx, ny, nz = self.shape
        per = DATUM_BYTES[self.info["datum"]]
        return nx * ny * per * (1 if self.info["acq"].startswith("2D") else nz)

    def deltas(self) -> list[float]:
        i = self.info
        nz = i["nz"]
        dz = i["fz"] / nz + i.get("zgap", 0.0) if i.get("fz", 0) > 0 else i["dz"]
        sizes = [i["fx"] / i["nx"], i["fy"] / i["ny"], dz]
        return [ORIENT[a][1] * s for a, s in zip(i["axes"], sizes)]

    def origins(self) -> list[float]:
        i = self.info
        out = []
        for c, code in enumerate(i["axes"]):
            size = abs(self.deltas()[c])
            n = self.shape[c]
            first = i.get("first", [None, None, None])[c]
            if first is None:
                org = 0.5 * (n - 1) * size + i.get("xyzoff", [0, 0, 0])[c]
                out.append(-org if code[0] in "RAI" else org)
                continue
            value, letter = first
            letter = letter.upper()
            if letter and letter in AXIS_LETTERS[ORIENT[code][0]]:
                out.append(-value if letter in "RAI" else value)
            else:
                if letter:
                    self.warnings.append(f"XYZFIRST letter {letter!r} not on axis {code}")
                out.append(-value if code[0] in "RAI" else value)
        return out

    def cardinal_lps(self) -> np.ndarray:
        """AFNI's (cardinal) grid: voxel -> DICOM (LPS) mm."""
        lps = np.eye(4)
        lps[:3, :3] = 0.0
        for c, (code, d, org) in enumerate(zip(self.info["axes"], self.deltas(), self.origins())):
            w = ORIENT[code][0]
            lps[w, c] = d
            lps[w, 3] = org
        return lps

    def world_ras(self) -> np.ndarray:
        """Voxel -> RAS mm as AFNI would write it: the oblique matrix if sent, else the grid."""
        lps = self.info.get("oblique")
        lps = np.asarray(lps, dtype=np.float64).reshape(4, 4) if lps is not None else self.cardinal_lps()
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps

    def cardinal_ras(self) -> np.ndarray:
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.cardinal_lps()

    def volumes(self) -> list[np.ndarray]:
        """Each whole image as an (nx, ny, nz) array; AFNI swaps bytes per BYTEORDER."""
        order = {"LSB_FIRST": "<", "MSB_FIRST": ">"}.get(self.info.get("byteorder", ""), "=")
        dtype = np.dtype(order + DATUM_DTYPE[self.info["datum"]])
        assert not self.info["acq"].startswith("2D"), "2D assembly not needed by these tests"
        return [np.frombuffer(img, dtype=dtype).reshape(self.shape, order="F") for img in self.images]


def parse_info(block: bytes) -> tuple[dict, list[str]]:
    """RT_process_info: lines, leading blanks skipped, prefix-matched, later lines override."""
    info: dict = {"acq": "2D+zt", "tr": 1.0, "datum": "short", "zorder": "alt", "tpattern": "alt+z"}
    warnings: list[str] = []
    text = block.decode("latin-1")
    for raw in text.split("\n"):
        line = raw.lstrip()[:1023]
        if not line:
            continue
        cmd = next((c for c in COMMANDS if line.startswith(c)), None)
        arg = line[len(cmd) :].strip() if cmd else ""
        nums = _floats(arg)
        bad = False
        if cmd == "ACQUISITION_TYPE":
            bad = arg.split()[0] not in ACQ_TYPES if arg else True
            if not bad:
                info["acq"] = arg.split()[0]
        elif cmd == "TR":
            bad = not nums or nums[0] <= 0
            if not bad:
                info["tr"] = nums[0]
        elif cmd == "XYFOV":
            bad = not nums or nums[0] <= 0
            if not bad:
                fx = nums[0]
                fy = nums[1] if len(nums) > 1 and nums[1] > 0 else fx
                info["fx"], info["fy"] = fx, fy
                if len(nums) > 2 and nums[2] > 0:
                    info["fz"] = nums[2]
        elif cmd == "XYMATRIX":
            ints = [int(v) for v in nums]
            bad = not ints or ints[0] <= 1
            if not bad:
                info["nx"] = ints[0]
                info["ny"] = ints[1] if len(ints) > 1 and ints[1] > 1 else ints[0]
                if len(ints) > 2 and ints[2] > 0:
                    info["nz"] = ints[2]
        elif cmd == "ZNUM":
            bad = not nums or nums[0] <= 0
            if not bad:
                info["nz"] = int(nums[0])
        elif cmd == "ZDELTA":
            bad = not nums or nums[0] <= 0
            if not bad:
                info["dz"] = nums[0]
        elif cmd == "ZGAP":
            bad = not nums or nums[0] < 0
            if not bad:
                info["zgap"] = nums[0]
        elif cmd == "DATUM":
            bad = arg not in DATUM_BYTES
            if not bad:
                info["datum"] = arg
        elif cmd == "BYTEORDER":
            bad = arg not in ("LSB_FIRST", "MSB_FIRST")
            if not bad:
                info["byteorder"] = arg
        elif cmd == "XYZAXES":
            codes = [ORIENT_ALIASES.get(t.upper(), t.upper()) for t in arg.split()[:3]]
            bad = len(codes) != 3 or any(c not in ORIENT for c in codes)
            if not bad:
                info["axes"] = tuple(codes)
        elif cmd in ("XYZFIRST", "ZFIRST"):
            parts = []
            for tok in arg.split()[: 3 if cmd == "XYZFIRST" else 1]:
                m = _NUM_LETTER.match(tok)
                if not m:
                    bad = True
                    break
                parts.append((float(m.group(1)), m.group(2)))
            if not bad:
                first = list(info.get("first", [None, None, None]))
                if cmd == "XYZFIRST" and len(parts) == 3:
                    first = parts
                elif cmd == "ZFIRST" and parts:
                    first[2] = parts[0]
                else:
                    bad = True
                info["first"] = first
        elif cmd == "XYZOFF":
            bad = len(nums) < 3
            if not bad:
                info["xyzoff"], info["first"] = nums[:3], [None, None, None]
        elif cmd == "TPATTERN":
            words = arg.split()
            if words and words[0] == "explicit":
                info["tpattern"], info["tpattern_times"] = "explicit", [float(w) for w in words[1:]]
            elif words and words[0] in ("alt+z", "seq+z"):
                info["tpattern"] = words[0]
            else:
                bad = True
        elif cmd == "ZORDER":
            info["zorder"] = arg.split()[0] if arg else "alt"
        elif cmd == "OBLIQUE_XFORM":
            bad = len(nums) < 16
            if not bad:
                info["oblique"] = nums[:16]
        elif cmd in ("PREFIX", "NAME"):
            info["prefix"] = arg.split()[0] if arg else None
        elif cmd == "NOTE":
            info.setdefault("notes", []).append(arg.replace("\a", "\n").replace("\f", "\n"))
        elif cmd == "NUM_CHAN":
            info["num_chan"] = int(nums[0]) if nums else 1
        elif cmd is None:
            bad = True
        else:
            info.setdefault("other", []).append(line)
        if bad:
            warnings.append(f"RT: illegal header info={line}")
    return info, warnings


class _Source:
    """Byte source with AFNI's read semantics; ``recv`` returns None at end of channel."""

    def recv(self, limit: int, timeout: float) -> bytes | None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError


class _TcpSource(_Source):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, limit: int, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return b""
        try:
            data = self.sock.recv(limit)
        except OSError:
            return None
        return data or None

    def close(self) -> None:
        self.sock.close()


class _ShmSource(_Source):
    def __init__(self, reader: ShmReader) -> None:
        self.reader = reader

    def recv(self, limit: int, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.reader.alive():  # iochan_recv: goodcheck fails once the writer detached
                return None
            data = self.reader.recv(limit)
            if data or time.monotonic() >= deadline:
                return data
            time.sleep(0.0005)

    def close(self) -> None:
        self.reader.close()


@dataclass
class Session:
    """One control connection and the data channel it named."""

    peer: tuple | None = None
    control: bytes = b""
    spec: str = ""
    data: bytearray = field(default_factory=bytearray)
    runs: list[AfniRun] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: bool = False
    done: bool = False


def free_port() -> int:
    """A loopback port nothing listens on (for the data port AFNI will open when told)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeAfni(threading.Thread):
    """plug_realtime in a thread. ``untrusted``: close every control connection at once.
    ``drop_after``: in the first session, close the data socket after that many images."""

    def __init__(
        self,
        untrusted: bool = False,
        drop_after: int | None = None,
        max_sessions: int = 10,
        timeout: float = 20.0,
        shm_port_offset: int = 0,
        control_port: int = 0,
    ) -> None:
        super().__init__(daemon=True, name="fake-afni")
        self.untrusted, self.drop_after = untrusted, drop_after
        self.max_sessions, self.timeout, self.shm_port_offset = max_sessions, timeout, shm_port_offset
        self.sessions: list[Session] = []
        self.control_connections = 0
        self.image_done = threading.Condition()
        self._stop_flag = threading.Event()
        self._listener = self._listen(control_port)
        self.control_port = self._listener.getsockname()[1]

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _listen(port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        return s

    def _accept(self, listener: socket.socket, limit: float) -> socket.socket | None:
        deadline = time.monotonic() + limit
        while not self._stop_flag.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select([listener], [], [], 0.05)
            if ready:
                conn, _ = listener.accept()
                return conn
        return None

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(5)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FakeAfni:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def runs(self) -> list[AfniRun]:
        return [r for s in self.sessions for r in s.runs]

    def wait_images(self, n: int, timeout: float = 10.0) -> bool:
        """Block until ``n`` images in total have arrived (bounded)."""
        deadline = time.monotonic() + timeout
        with self.image_done:
            while sum(len(r.images) for r in self.runs) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.image_done.wait(left)
        return True

    def wait_sessions_done(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(1 for s in self.sessions if s.done) >= n:
                return True
            time.sleep(0.01)
        return False

    # -- the plugin ------------------------------------------------------------------------
    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop_flag.is_set() and len(self.sessions) < self.max_sessions:
            if self._listener is None:  # RT_check_listen: listen again after a run
                self._listener = self._listen(self.control_port)
            conn = self._accept(self._listener, deadline - time.monotonic())
            if conn is None:
                return
            self.control_connections += 1
            if self.untrusted:  # "untrusted host connection - closing!"
                conn.close()
                continue
            session = Session(peer=conn.getpeername())
            self.sessions.append(session)
            self._listener.close()  # not listening on the control port during a run
            self._listener = None
            try:
                self._session(conn, session, deadline)
            except Exception as exc:  # recorded for the test to see
                session.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                session.done = True

    def _session(self, conn: socket.socket, session: Session, deadline: float) -> None:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        while True:  # read to EOF, 1 ms apart (PR:2034-2044)
            chunk = conn.recv(4096)
            if not chunk:
                break
            session.control += chunk
        conn.close()
        spec = session.control.split(b"\0")[0].split(b"\n")[0].decode("ascii")
        session.spec = spec
        if b"\n" in session.control.split(b"\0")[0]:
            session.errors.append("control string has an info-command line")
        kind, name, size = spec.split(":", 2)
        if kind == "tcp":
            listener = self._listen(int(size))
            data_conn = self._accept(listener, deadline - time.monotonic())
            listener.close()
            if data_conn is None:
                session.errors.append("sender never connected to the data port")
                return
            source: _Source = _TcpSource(data_conn)
        elif kind == "shm":
            source = _ShmSource(ShmReader(name, self.shm_port_offset, wait=2.0))
        else:
            session.errors.append(f"bad data spec {spec!r}")
            return
        try:
            self._read_runs(source, session, deadline)
        finally:
            source.close()

    def _read_header(self, source: _Source, session: Session, pending: bytes,
                     deadline: float) -> tuple[bytes, bytes] | None:
        buf = bytearray(pending)
        if not buf:
            while not buf:  # wait (no timeout in AFNI; bounded here) for the first bytes
                if time.monotonic() > deadline or self._stop_flag.is_set():
                    return None
                chunk = source.recv(INFO_SIZE, 0.05)
                if chunk is None:
                    return None
                buf += chunk
                session.data += chunk
        while len(buf) < INFO_SIZE:  # keep reading only while more arrives within 1 ms
            chunk = source.recv(INFO_SIZE - len(buf), 0.001)
            if not chunk:
                break
            buf += chunk
            session.data += chunk
        nul = buf.find(b"\0")
        if nul < 0:
            session.errors.append("info string not NUL-terminated! (header split over >1 ms or too long)")
            return None
        return bytes(buf[:nul]), bytes(buf[nul + 1 :])

    def _read_runs(self, source: _Source, session: Session, deadline: float) -> None:
        pending = b""
        images_total = 0
        while True:
            got = self._read_header(source, session, pending, deadline)
            if got is None:
                return
            block, pending = got
            info, warnings = parse_info(block)
            run = AfniRun(block, info, warnings)
            session.runs.append(run)
            if not run.complete:
                session.errors.append("image header info was incomplete!")
                return
            imsize = run.imsize
            while True:
                buf = bytearray(pending[:imsize])
                pending = pending[imsize:]
                eof = False
                while len(buf) < imsize:
                    if time.monotonic() > deadline or self._stop_flag.is_set():
                        return
                    chunk = source.recv(imsize - len(buf), 0.05)
                    if chunk is None:
                        eof = True
                        break
                    buf += chunk
                    session.data += chunk
                if eof:
                    run.partial = bytes(buf)
                    return
                if bytes(buf[: len(END_OF_RUN)]) == END_OF_RUN:
                    run.ended_by_marker = True
                    break  # next: a new metadata block on the same connection
                with self.image_done:
                    run.images.append(bytes(buf))
                    run.image_times.append(time.perf_counter())
                    self.image_done.notify_all()
                images_total += 1
                if self.drop_after is not None and len(self.sessions) == 1 and images_total >= self.drop_after:
                    session.dropped = True
                    return  # closes the data socket mid-run, as a crashing AFNI would
