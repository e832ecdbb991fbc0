"""A DICOM file read while it is still being written is incomplete at every length, never 'foreign'."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcontrol.scanner.dicomfile import open_dicom
from rtcontrol.scanner.errors import IncompleteFile
from tests.support.scanner import series_files


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the cut-off values
def test_a_header_cut_anywhere_is_incomplete(dicom_root: Path) -> None:
    """Cut inside its zero preamble or its SOP Class UID ('1.2.840.10008.5.'), the file was called foreign ('no
    DICM marker', 'not an image we read') and skipped with a file error, though the rest of it was on its way."""
    raw = series_files(dicom_root, "siemens_mosaic_ep2d_int_6vol")[0].read_bytes()
    for cut in range(1, 4096):
        with pytest.raises(IncompleteFile):
            open_dicom(Path(f"cut-at-{cut}.dcm"), raw[:cut])
    open_dicom(Path("whole.dcm"), raw)


def test_a_short_foreign_file_is_still_foreign() -> None:
    from rtcontrol.scanner.errors import ForeignFile

    with pytest.raises(ForeignFile, match="not a DICOM file"):
        open_dicom(Path("notes.txt"), b"Patient moved, repeat the localizer.\n")
