"""Pure protocol code against rtfeedme's captured bytes (fixtures/afni/rtfeedme)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rtcontrol.afni import protocol
from rtcontrol.afni.source import load_nifti
from rtcontrol.scanner.volume import Volume
from tests.support.plug_realtime import AfniRun, parse_info


def split_stream(data: bytes, imsize: int) -> list[tuple[bytes, list[bytes], bool]]:
    """Captured data channel -> [(header block, images, ended by marker)], as AFNI reads it."""
    runs, pos = [], 0
    while pos < len(data):
        nul = data.index(b"\0", pos)
        header, pos = data[pos:nul], nul + 1
        images, marker = [], False
        while pos < len(data):
            img, pos = data[pos : pos + imsize], pos + imsize
            if img.startswith(protocol.END_OF_RUN):
                marker = True
                break
            images.append(img)
        runs.append((header, images, marker))
    return runs


def test_control_string_is_rtfeedmes(rtfeedme_dir: Path) -> None:
    captured = (rtfeedme_dir / "s16_3D_control.bin").read_bytes()
    assert protocol.control_message(protocol.tcp_spec("localhost", 7960)) == captured
    assert protocol.DEFAULT_CONTROL_PORT == 7961 and protocol.DEFAULT_DATA_PORT == 7960


def test_control_string_rejects_info_line_and_bad_specs() -> None:
    with pytest.raises(ValueError):
        protocol.control_message("tcp:localhost:7960\n3T_toafni")
    with pytest.raises(ValueError):
        protocol.tcp_spec("localhost", 0)
    assert protocol.control_message(protocol.shm_spec("grv", 1024 * 1024)) == b"shm:grv:1048576\0"
    assert protocol.parse_size("1M") == 1048576 and protocol.parse_size("50k") == 51200


@pytest.mark.parametrize("name,capture", [("tiny_s16.nii", "s16_3D"), ("tiny_f32.nii", "f32_3D")])
def test_header_and_images_match_capture(rtfeedme_dir: Path, name: str, capture: str) -> None:
    """Every line rtfeedme sends is byte-identical; ours adds BYTEORDER (rtfeedme sends host order
    undeclared, which is LSB_FIRST on the capture machine, so AFNI reads the same voxels)."""
    volumes = load_nifti(rtfeedme_dir / name)
    header = protocol.build_header(volumes[0])
    expected_text = (rtfeedme_dir / f"{capture}_header1.txt").read_text()
    assert header.text == expected_text + "BYTEORDER LSB_FIRST\n"
    assert header.block.count(b"\0") == 1 and header.block.endswith(b"\n\0")
    data = (rtfeedme_dir / f"{capture}_data.bin").read_bytes()
    [(cap_header, cap_images, marker)] = split_stream(data, header.imsize)
    assert cap_header.decode() == expected_text and not marker
    ours = [protocol.encode_image(v, header).payload for v in volumes]
    assert ours == cap_images  # byte for byte, x fastest, little-endian
    # whole stream: ours minus the BYTEORDER line is rtfeedme's stream
    stream = header.block + b"".join(ours)
    assert stream.replace(b"BYTEORDER LSB_FIRST\n", b"") == data


def test_geometry_semantics_equal_to_capture(rtfeedme_dir: Path) -> None:
    """AFNI's parse of our header and of rtfeedme's gives the same grid and world affine."""
    vol = load_nifti(rtfeedme_dir / "tiny_s16.nii")[0]
    ours, _ = parse_info(protocol.build_header(vol).block[:-1])
    theirs, _ = parse_info((rtfeedme_dir / "s16_3D_header1.txt").read_bytes())
    run_ours, run_theirs = AfniRun(b"", ours), AfniRun(b"", theirs)
    assert run_ours.complete and run_theirs.complete
    np.testing.assert_allclose(run_ours.world_ras(), run_theirs.world_ras())
    np.testing.assert_allclose(run_ours.world_ras(), nib.load(rtfeedme_dir / "tiny_s16.nii").affine)


def test_end_of_run_stream_matches_break_capture(rtfeedme_dir: Path) -> None:
    """rtfeedme -break: run 1 (2 vols), marker image, run 2 (3 vols). The marker's tail is
    uninitialised in rtfeedme (zeroed in the capture); ours is zero-filled, so bytes agree."""
    volumes = load_nifti(rtfeedme_dir / "tiny_s16.nii")
    header = protocol.build_header(volumes[0])
    ours = (
        header.block
        + b"".join(protocol.encode_image(v, header).payload for v in volumes[:2])
        + protocol.end_of_run_image(header.imsize)
        + header.block
        + b"".join(protocol.encode_image(v, header).payload for v in volumes[2:])
    )
    data = (rtfeedme_dir / "s16_break_data.bin").read_bytes()
    assert ours.replace(b"BYTEORDER LSB_FIRST\n", b"") == data
    runs = split_stream(data, header.imsize)
    assert [len(r[1]) for r in runs] == [2, 3] and runs[0][2] and not runs[1][2]


def test_prefix_and_note_lines() -> None:
    vol = Volume(np.zeros((4, 4, 2), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]), tr=1.5)
    header = protocol.build_header(vol, protocol.HeaderOptions(prefix="sub 01/run#1", note="line one\nline two"))
    assert "PREFIX sub_01_run_1" in header.lines
    assert "NOTE line one\fline two" in header.lines
    info, warnings = parse_info(header.block[:-1])
    assert not warnings and info["prefix"] == "sub_01_run_1" and info["notes"] == ["line one\nline two"]
    assert info["tr"] == pytest.approx(1.5)


def test_datum_choice_follows_the_data() -> None:
    aff = np.eye(4)
    assert protocol.choose_datum(Volume(np.zeros((2, 2, 2), np.int16), aff)) == "short"
    assert protocol.choose_datum(Volume(np.full((2, 2, 2), 4095, np.uint16), aff)) == "short"
    assert protocol.choose_datum(Volume(np.full((2, 2, 2), 40000, np.uint16), aff)) == "float"
    assert protocol.choose_datum(Volume(np.zeros((2, 2, 2), np.float32), aff)) == "float"
    assert protocol.choose_datum(Volume(np.zeros((2, 2, 2), np.int16), aff, scl_slope=0.5)) == "float"
    scaled = Volume(np.arange(8, dtype=np.int16).reshape(2, 2, 2), aff, tr=1.0, scl_slope=0.5, scl_inter=1.0)
    header = protocol.build_header(scaled)
    values = np.frombuffer(protocol.encode_image(scaled, header).payload, "<f4").reshape(2, 2, 2, order="F")
    np.testing.assert_array_equal(values, scaled.scaled())


def test_uint16_out_of_range_is_clipped_and_counted() -> None:
    first = Volume(np.full((2, 2, 2), 100, np.uint16), np.eye(4), tr=1.0)
    header = protocol.build_header(first)
    later = Volume(np.full((2, 2, 2), 40000, np.uint16), np.eye(4), tr=1.0)
    image = protocol.encode_image(later, header)
    assert image.clipped == 8
    assert set(np.frombuffer(image.payload, "<i2")) == {32767}


def test_slice_timing_gives_3d_timing_and_explicit_tpattern() -> None:
    times = (0.0, 1.0, 0.5, 1.5)
    vol = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4), tr=2.0, slice_timing=times)
    header = protocol.build_header(vol)
    assert header.lines[0] == "ACQUISITION_TYPE 3D+timing"
    assert "TPATTERN explicit 0 1 0.5 1.5" in header.lines
    info, warnings = parse_info(header.block[:-1])
    assert not warnings and info["acq"] == "3D+timing" and info["tpattern_times"] == list(times)
    wrong = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4), tr=2.0, slice_timing=(0.0, 1.0))
    header = protocol.build_header(wrong)
    assert header.lines[0] == "ACQUISITION_TYPE 3D+t" and header.warnings


def test_missing_tr_and_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(protocol.HeaderError, match="TR unknown"):
        protocol.build_header(Volume(np.zeros((4, 4, 2), np.int16), np.eye(4)))
    with pytest.raises(protocol.HeaderError, match="at least 2x2x1"):
        protocol.build_header(Volume(np.zeros((1, 4, 2), np.int16), np.eye(4), tr=1.0))
    with pytest.raises(protocol.HeaderError, match="complex"):
        protocol.build_header(Volume(np.zeros((4, 4, 2), np.complex64), np.eye(4), tr=1.0))


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([3.0, 3.0, 4.0, 1.0]),
        np.diag([-2.0, 2.5, -3.0, 1.0]),  # R-L, P-A, S-I
        np.array([[0, 0, -3.0, 10], [2.0, 0, 0, -20], [0, -2.0, 0, 30], [0, 0, 0, 1]]),  # sagittal-like permutation
    ],
)
def test_cardinal_geometry_round_trips_through_afni_rules(affine: np.ndarray) -> None:
    affine = affine.copy()
    affine[:3, 3] += [12.25, -7.5, 3.0]
    vol = Volume(np.zeros((6, 5, 4), np.int16), affine, tr=1.0)
    header = protocol.build_header(vol)
    assert not any(line.startswith("OBLIQUE_XFORM") for line in header.lines)
    info, warnings = parse_info(header.block[:-1])
    run = AfniRun(b"", info)
    assert not warnings and run.complete
    np.testing.assert_allclose(run.world_ras(), affine, atol=1e-5)


def test_oblique_geometry_sends_exact_xform_and_nearest_cardinal_grid() -> None:
    angle = np.deg2rad(13.3)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([3.4375, 3.4375, 4.4])
    affine[:3, 3] = [-108.2, -95.1, -20.7]
    vol = Volume(np.zeros((64, 64, 9), np.int16), affine, tr=2.0)
    header = protocol.build_header(vol)
    info, warnings = parse_info(header.block[:-1])
    run = AfniRun(b"", info)
    assert not warnings and run.complete and info["axes"] == ("L-R", "P-A", "I-S")
    np.testing.assert_allclose(run.world_ras(), affine, atol=1e-4)
    # AFNI's cardinal grid keeps voxel (0,0,0) where it really is and the voxel sizes
    np.testing.assert_allclose(run.cardinal_ras()[:3, 3], affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.abs(np.diag(run.cardinal_ras()))[:3], [3.4375, 3.4375, 4.4], atol=1e-5)
