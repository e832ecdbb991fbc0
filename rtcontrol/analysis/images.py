"""Reading images the analysis needs from disk: a reference volume or a mask, as NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtcontrol.scanner.volume import Volume


def load_volume(path: str | Path, index: int = 0) -> Volume:
    """Volume ``index`` of a 3-D or 4-D NIfTI file (scaling applied), e.g. an earlier run's reference."""
    import nibabel as nib  # imported here: only needed when a file is given
    from nibabel.spatialimages import SpatialImage

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for a foreign file
        raise ValueError(f"{path} is not a readable NIfTI image: {exc}") from None
    if not isinstance(img, SpatialImage):
        raise ValueError(f"{path} is not a volume image")
    shape = img.shape
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1 and index == 0):
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape[:3])
    elif len(shape) == 4:
        if not 0 <= index < shape[3]:
            raise ValueError(f"{path} has {shape[3]} volumes; volume {index} does not exist")
        data = np.asarray(img.dataobj[..., index], dtype=np.float32)
    else:
        raise ValueError(f"{path} has shape {shape}; expected a 3-D or 4-D image")
    return Volume(data=data, affine=img.affine, run=path.name, index=index)
