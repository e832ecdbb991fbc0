"""Series the fixtures lack, made from real fixture files with pydicom (real headers and pixel data,
re-tagged or re-packed), for tests that check them against the real dcm2niix."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid


def philips_asl(src: Path, dst: Path, seed: int = 11) -> list[Path]:
    """A Philips classic per-slice label/control ASL run from ``philips_epi_magdeburg``: each real
    slice file becomes a CONTROL image (as is) and a LABEL image (pixels lowered by 5 %), both with
    the slice's TemporalPositionIdentifier, MRImageLabelType (2005,1429) saying which, and instance
    numbers in Philips' order (control then label per slice). 27 files -> 54 (6 volumes of 9 slices),
    written under shuffled names so the listing order says nothing."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.glob("*.dcm"))
    names = [f"IM_{i:04d}" for i in range(2 * len(files))]
    random.Random(seed).shuffle(names)
    series_uid = generate_uid()
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        number = int(ds.InstanceNumber)
        for j, label in enumerate(("CONTROL", "LABEL")):
            copy = pydicom.dcmread(f)
            copy.SeriesInstanceUID = series_uid
            copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            copy.InstanceNumber = 2 * (number - 1) + j + 1
            copy[0x2005, 0x1429].value = label
            if label == "LABEL":
                pixels = copy.pixel_array
                copy.PixelData = (pixels.astype(np.float64) * 0.95).astype(pixels.dtype).tobytes()
            path = dst / names.pop()
            copy.save_as(path)
            out.append(path)
    return out


def pack_enhanced(files: list[Path], dst: Path, echoes: bool = False) -> Path:
    """One enhanced multi-frame file holding the frames of several real one-volume XA files (as Philips
    and some exports write whole 4-D series). ``echoes``: the files become echoes 1, 2 ... of one
    temporal position (EchoNumbers, EffectiveEchoTime 20, 40 ... ms) instead of successive volumes."""
    first = pydicom.dcmread(files[0])
    frames, pixels = [], []
    for e, f in enumerate(files):
        ds = pydicom.dcmread(f)
        for item in ds.PerFrameFunctionalGroupsSequence:
            if echoes:
                item.MREchoSequence[0].EffectiveEchoTime = 20.0 * (e + 1)
                item.MREchoSequence[0].EchoNumbers = e + 1
                content = item.FrameContentSequence[0]
                content.TemporalPositionIndex = 1
                content.DimensionIndexValues = [1, int(content.InStackPositionNumber), 1]
            frames.append(item)
        pixels.append(ds.PixelData)
    first.PerFrameFunctionalGroupsSequence = frames
    first.NumberOfFrames = len(frames)
    first.PixelData = b"".join(pixels)
    first.SOPInstanceUID = first.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    first.save_as(dst)
    return dst
