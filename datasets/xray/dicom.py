"""Chest radiographs exported from a PACS as DICOM: ``upload dicom:FOLDER``.

FOLDER holds the DICOM files (any names, sub-folders too; a ``DICOMDIR`` index is
skipped) and ``labels.csv`` beside them, with a header row:

    file,label[,split]               file: the path relative to FOLDER
    sop_instance_uid,label[,split]   or the image's SOP Instance UID

``label`` is 0 / 1 or normal / pneumonia; ``split`` is train or test (without it, a
seeded fifth of the images is the test split). Each image must be a CR or DX radiograph,
one frame, MONOCHROME1 or MONOCHROME2. Its pixels go through the modality LUT (rescale
slope and intercept), then the VOI LUT or window the file gives, MONOCHROME1 is inverted
(bright bone either way), and the result is scaled to 0..255 and resized to the asked
square size, as the folder loader does.

Nothing of the header that names a patient is kept: only the pixels, the label, and a
count of allowlisted acquisition values (modality, view position, bits stored,
photometric interpretation, transfer syntax, burned-in annotation flag, the range of the
pixel spacing) for the dataset card. A value outside its allowlist counts as "other".
Pixels can still carry burned-in text; the card says so.

Every problem is a `DataError` naming the files (up to five) and why, before anything
is uploaded:

    data = load_dicom_folder("pacs-export", size=128)
    data.acquisition["modality"]   # {"DX": 410, "CR": 90}
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError
from datasets.xray.loaders import XRayData, XRaySplit, _check_size, _ToSquareGray

LABELS_FILE = "labels.csv"
DICOM_LICENCE = "as granted by the data owner (the hospital's own images)"
MODALITIES = ("CR", "DX")
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2")
VIEW_POSITIONS = ("PA", "AP", "LL", "RL", "LLD", "RLD", "LAT", "LATERAL")
BURNED_IN = ("YES", "NO")
LABEL_VALUES = {"0": 0, "1": 1, "normal": 0, "pneumonia": 1}
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
MAX_NAMED = 5  # bad files named in the error; the count says how many in all
MAX_PIXELS = 50_000_000  # a detector's largest radiographs are about 4300 x 3500 px
UNREADABLE = (ValueError, TypeError, AttributeError, KeyError, IndexError, OSError,
              EOFError, RuntimeError, NotImplementedError)


def load_dicom_folder(root: str | Path, size: int = 64, seed: int = 0) -> XRayData:
    """Read FOLDER's radiographs and ``labels.csv`` (module docstring) into `XRayData`
    whose ``acquisition`` counts the kept header values."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    size = _check_size(size)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.name not in (LABELS_FILE, "DICOMDIR"))
    if not files:
        raise DataError(f"{root}: no DICOM files")
    transform = _ToSquareGray(size)
    images: dict[Path, np.ndarray] = {}
    uids: dict[str, Path] = {}
    kept: list[dict] = []
    problems: list[str] = []
    for path in files:
        try:
            image, uid, values = _read_radiograph(path, transform)
        except DataError as exc:
            problems.append(f"{path.relative_to(root)}: {exc}")
            continue
        images[path], uids[uid] = image, path
        kept.append(values)
    _refuse(problems, "cannot be used")
    labels, splits = _read_labels(root, images, uids)
    chosen = sorted(images)
    train, test = _split(chosen, splits, seed)
    return XRayData(
        train=_stack(train, images, labels), val=None, test=_stack(test, images, labels),
        source="DICOM export (CR/DX radiographs)", licence=DICOM_LICENCE, synthetic=False,
        acquisition=_acquisition(kept))


def _refuse(problems: list[str], what: str) -> None:
    if problems:
        named = "; ".join(problems[:MAX_NAMED])
        more = f" (and {len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
        raise DataError(f"{len(problems)} file(s) {what}, nothing uploaded: {named}{more}")


def _read_radiograph(path: Path, transform) -> tuple[np.ndarray, str, dict]:
    """(uint8 image (1, size, size), SOP Instance UID, allowlisted values) of one file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError("not a DICOM file") from None
    except UNREADABLE as exc:
        raise DataError(f"unreadable DICOM ({type(exc).__name__})") from None
    try:
        photometric = _check_header(ds)
    except UNREADABLE as exc:
        raise DataError(f"malformed header ({type(exc).__name__})") from None
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        pixels = ds.pixel_array
    except UNREADABLE as exc:
        name = getattr(syntax, "name", None) or "unknown"
        raise DataError(f"transfer syntax {name[:60]} cannot be decoded here "
                        f"({type(exc).__name__})") from None
    uid = str(ds.get("SOPInstanceUID", "") or "")
    return _to_image(ds, pixels, photometric, transform), uid, _allowed_values(ds, syntax)


def _check_header(ds: Any) -> str:
    """Refuse what is not one greyscale CR/DX frame of a sane size; its photometric
    interpretation (read before any pixel is decoded)."""
    modality = str(ds.get("Modality", "") or "none")
    if modality not in MODALITIES:
        raise DataError(f"modality {modality[:16]}, not a chest radiograph "
                        f"({' or '.join(MODALITIES)})")
    if "PixelData" not in ds:
        raise DataError("no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in PHOTOMETRIC or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"photometric interpretation {photometric[:16] or 'none'}, not "
                        "a greyscale radiograph (MONOCHROME1 or MONOCHROME2)")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DataError("more than one frame (a radiograph has one)")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if not (0 < rows and 0 < columns and rows * columns <= MAX_PIXELS):
        raise DataError(f"{rows} x {columns} px is not a radiograph's size (at most "
                        f"{MAX_PIXELS // 1_000_000} million pixels)")
    return photometric


def _to_image(ds: Any, pixels: np.ndarray, photometric: str, transform) -> np.ndarray:
    """Modality LUT, VOI LUT or window, MONOCHROME1 inverted, 0..255, resized."""
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float64)
    except UNREADABLE as exc:
        raise DataError(f"bad rescale or VOI LUT ({type(exc).__name__})") from None
    if values.ndim != 2 or not np.isfinite(values).all():
        raise DataError(f"pixel array of shape {values.shape} is not one 2-D image")
    low, high = float(values.min()), float(values.max())
    if photometric == "MONOCHROME1":  # low values are bright: invert within the range
        values = high + low - values
    scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return transform(Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")).numpy()


def _allowed_values(ds: Any, syntax: Any) -> dict:
    """The header values the card may show, each from an allowlist (else "other")."""
    view = str(ds.get("ViewPosition", "") or "").upper()
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    try:
        bits = int(ds.get("BitsStored", 0) or 0)
    except (TypeError, ValueError):
        bits = 0
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        spacing_mm = float(spacing[0]) if spacing else None
    except (TypeError, ValueError, IndexError):
        spacing_mm = None
    syntax_name = getattr(syntax, "name", "") if getattr(syntax, "is_transfer_syntax",
                                                         False) else ""
    return {"modality": str(ds.Modality),
            "view_position": view if view in VIEW_POSITIONS else ("not stated" if not view
                                                                  else "other"),
            "bits_stored": str(bits) if 1 <= bits <= 16 else "other",
            "photometric": str(ds.PhotometricInterpretation),
            "transfer_syntax": syntax_name or "other",
            "burned_in_annotation": burned if burned in BURNED_IN else "not stated",
            "pixel_spacing_mm": spacing_mm if spacing_mm and 0 < spacing_mm < 10 else None}


def _acquisition(kept: list[dict]) -> dict:
    """Counts of each allowlisted value over the images, and the pixel spacing range."""
    counted = ("modality", "view_position", "bits_stored", "photometric", "transfer_syntax",
               "burned_in_annotation")
    summary: dict[str, Any] = {key: dict(Counter(values[key] for values in kept).most_common())
                               for key in counted}
    spacings = [values["pixel_spacing_mm"] for values in kept if values["pixel_spacing_mm"]]
    summary["pixel_spacing_mm"] = ([round(min(spacings), 4), round(max(spacings), 4)]
                                   if spacings else None)
    return summary


def _read_labels(root: Path, images: dict[Path, np.ndarray],
                 uids: dict[str, Path]) -> tuple[dict[Path, int], dict[Path, str]]:
    """Each image's label and, when the CSV has a split column, its split."""
    path = root / LABELS_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing (columns file or sop_instance_uid, label, "
                        "optional split)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {str(c).strip().lower() for c in reader.fieldnames or ()}
            rows = [{str(k or "").strip().lower(): v for k, v in row.items()}
                    for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a UTF-8 CSV ({exc})") from None
    key = "file" if "file" in columns else "sop_instance_uid"
    if key not in columns or "label" not in columns:
        raise DataError(f"{path}: needs a header row with file (or sop_instance_uid) and "
                        f"label columns, found {', '.join(sorted(columns)) or 'none'}")
    by_name = ({p.resolve(): p for p in images} if key == "file" else uids)
    labels: dict[Path, int] = {}
    splits: dict[Path, str] = {}
    problems: list[str] = []
    for line, row in enumerate(rows, start=2):
        name = str(row.get(key) or "").strip()
        matched = by_name.get((root / name).resolve() if key == "file" else name)
        label = LABEL_VALUES.get(str(row.get("label") or "").strip().lower())
        split = str(row.get("split") or "").strip().lower()
        if matched is None:
            problems.append(f"line {line}: {key} {name[:80]!r} names no DICOM image here")
        elif label is None:
            problems.append(f"line {line}: label {str(row.get('label'))[:20]!r} is not "
                            "0, 1, normal or pneumonia")
        elif matched in labels:
            problems.append(f"line {line}: a second label for {name[:80]!r}")
        elif "split" in columns and split not in SPLITS:
            problems.append(f"line {line}: split {split[:20]!r} is not train or test")
        else:
            labels[matched] = label
            if "split" in columns:
                splits[matched] = split
    problems += [f"{p.relative_to(root)}: no label in {LABELS_FILE}"
                 for p in sorted(images) if p not in labels]
    if problems:
        unlabelled = sum(1 for p in images if p not in labels)
        raise DataError(f"{path}: {'; '.join(problems[:MAX_NAMED])}"
                        + (f" ({unlabelled} image(s) without a label)" if unlabelled else "")
                        + "; nothing uploaded")
    return labels, splits


def _split(chosen: list[Path], splits: dict[Path, str], seed: int) -> tuple[list, list]:
    """(train, test) files: the CSV's split column, else a seeded fifth for test."""
    if splits:
        train = [p for p in chosen if splits[p] == "train"]
        test = [p for p in chosen if splits[p] == "test"]
    else:
        order = np.random.default_rng(seed).permutation(len(chosen))
        held = max(1, round(TEST_FRACTION * len(chosen)))
        test = [chosen[i] for i in sorted(order[:held])]
        train = [chosen[i] for i in sorted(order[held:])]
    if not train or not test:
        raise DataError(f"{len(train)} training and {len(test)} test image(s): both splits "
                        "need at least one (add images or a split column)")
    return train, test


def _stack(files: list[Path], images: dict, labels: dict) -> XRaySplit:
    return XRaySplit(np.stack([images[p] for p in files]).astype(np.uint8),
                     np.asarray([labels[p] for p in files], dtype=np.int64))
