"""Real DICOM radiographs written with pydicom from synthetic pixels, for the tests.

Each file carries a patient's identity in its header (`IDENTITY`, plus fresh study,
series and instance UIDs) so a test can look for it where it must never be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from datasets.xray.dicom import LABELS_FILE

IDENTITY = {"PatientName": "Quillfeather^Zebedee", "PatientID": "PSY-778812",
            "PatientBirthDate": "19470312", "AccessionNumber": "ACC99812377",
            "InstitutionName": "Saint Wexford Infirmary", "StudyDate": "20240229",
            "ReferringPhysicianName": "Marchbanks^Odile"}


def stored_pixels(image: np.ndarray, bits: int, photometric: str,
                  slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored values whose modality LUT (value * slope + intercept) spans the bit range
    in proportion to `image` (uint8, bright = dense), inverted for MONOCHROME1."""
    top = (1 << bits) - 1
    level = image.astype(np.float64) / 255.0 * top
    if photometric == "MONOCHROME1":
        level = top - level
    return np.round(level).astype(np.uint16)


def write_radiograph(path: Path, image: np.ndarray, *, photometric: str = "MONOCHROME2",
                     bits: int = 12, syntax=ExplicitVRLittleEndian, modality: str = "DX",
                     window: bool = True, rescale: tuple[float, float] | None = None,
                     view: str = "PA", pixels: bool = True) -> dict:
    """Write one single-frame radiograph of `image` (uint8, H x W); returns the
    identifying values it carries (IDENTITY and its UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for keyword, value in IDENTITY.items():
        setattr(ds, keyword, value)
    ds.Modality, ds.ViewPosition, ds.BurnedInAnnotation = modality, view, "NO"
    ds.ImagerPixelSpacing = [0.139, 0.139]
    if pixels:
        ds.Rows, ds.Columns = image.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = stored_pixels(image, bits, photometric).tobytes()
        if rescale:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        if window:  # a window over the whole range of the modality LUT's output
            slope, intercept = rescale or (1.0, 0.0)
            top = ((1 << bits) - 1) * slope + intercept
            ds.WindowCenter, ds.WindowWidth = (top + intercept) / 2, top - intercept + 1
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return dict(IDENTITY, StudyInstanceUID=ds.StudyInstanceUID,
                SeriesInstanceUID=ds.SeriesInstanceUID, SOPInstanceUID=ds.SOPInstanceUID)


VARIANTS = [  # (keyword arguments of write_radiograph) cycled over the images
    {},
    {"photometric": "MONOCHROME1", "bits": 16, "rescale": (2.0, -1024.0), "modality": "CR"},
    {"syntax": RLELossless, "view": "AP"},
    {"syntax": JPEG2000Lossless, "photometric": "MONOCHROME1", "window": False},
]


def export(folder, images, labels, *, by_uid: bool = False, split: bool = False) -> list[dict]:
    """A PACS export of `images` in `folder`, one variant after another, with labels.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    written, rows = [], []
    for i, (image, label) in enumerate(zip(images, labels)):
        name = f"series{i // 4}/img{i:03d}.dcm"  # sorted paths are in i order
        (folder / name).parent.mkdir(exist_ok=True)
        ids = write_radiograph(folder / name, image[0], **VARIANTS[i % len(VARIANTS)])
        written.append(ids)
        key = ids["SOPInstanceUID"] if by_uid else name
        label_text = ("pneumonia" if label else "normal") if i % 2 else str(int(label))
        rows.append(f"{key},{label_text}" + (f",{'test' if i < 3 else 'train'}" if split else ""))
    header = ("sop_instance_uid" if by_uid else "file") + ",label" + (",split" if split else "")
    (folder / LABELS_FILE).write_text("\n".join([header, *rows]) + "\n")
    return written
