"""Load chest X-rays into one in-memory form, whatever the source.

Four sources, all ending as uint8 images N x 1 x H x W and int64 labels (0 = normal,
1 = pneumonia):

- ``synthetic``: the generator in :mod:`datasets.xray.synthetic` (no patient data);
- ``pneumoniamnist:PATH``: a MedMNIST ``.npz`` (PneumoniaMNIST, any MedMNIST+ size);
- ``folder:PATH``: the Kermany layout ``train|val|test/NORMAL|PNEUMONIA/*.jpeg``;
- ``dicom:PATH``: a PACS export of CR/DX radiographs and a labels CSV
  (:mod:`datasets.xray.dicom`).

Every problem with a file or folder raises :class:`common.errors.DataError` with one
line naming the file and what is wrong.

    data = load_source("pneumoniamnist:pneumoniamnist.npz", size=64)
    data.train.images.shape, data.test.labels.mean()
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError
from datasets.xray.synthetic import generate

LABEL_NAMES = {0: "normal", 1: "pneumonia"}
SYNTHETIC_LICENCE = "synthetic (generated, no patient data)"
PNEUMONIAMNIST_LICENCE = "CC BY 4.0 (MedMNIST v2, PneumoniaMNIST)"
KERMANY_LICENCE = ("as granted by the data owner (the public Kermany et al. 2018 release "
                   "is CC BY 4.0)")
CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")          # label = position in this tuple
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MIN_SIZE = 8                                     # px, for loaded and resized images


@dataclass
class XRaySplit:
    """Images uint8 (N, 1, H, W) and labels int64 (N,), 0 = normal, 1 = pneumonia."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class XRayData:
    """Train, optional validation and test splits, with where they came from."""

    train: XRaySplit
    val: XRaySplit | None
    test: XRaySplit
    source: str
    licence: str
    synthetic: bool
    acquisition: dict | None = None  # allowlisted header counts (DICOM), for the card

    def splits(self) -> dict[str, XRaySplit]:
        """The splits that exist, by name (train, val when present, test)."""
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}


# --------------------------------------------------------------------------- synthetic

def load_synthetic(n: int = 3000, size: int = 64, pneumonia_fraction: float = 0.73,
                   seed: int = 0, test_fraction: float = 0.2) -> XRayData:
    """`n` synthetic X-rays split into train and test (the last ``round(n*test_fraction)``).

        data = load_synthetic(n=500, size=28)      # 400 train, 100 test
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    images, labels = generate(n, size=size, pneumonia_fraction=pneumonia_fraction, seed=seed)
    n_test = round(len(labels) * float(test_fraction))
    if n_test == 0 or n_test == len(labels):
        raise DataError(f"n={n} is too small to split into train and test")
    cut = len(labels) - n_test
    return XRayData(train=XRaySplit(images[:cut], labels[:cut]),
                    val=None,
                    test=XRaySplit(images[cut:], labels[cut:]),
                    source="synthetic", licence=SYNTHETIC_LICENCE, synthetic=True)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise DataError(f"size must be an integer of at least {MIN_SIZE} px, got {size!r}")
    return int(size)


# --------------------------------------------------------------------------- MedMNIST .npz

def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, 1, H, W) to (N, 1, size, size): bilinear, antialiased."""
    import torch
    from torch.nn.functional import interpolate

    if images.shape[-2:] == (size, size):
        return images
    out = np.empty((len(images), 1, size, size), dtype=np.uint8)
    for start in range(0, len(images), 512):
        chunk = torch.from_numpy(images[start:start + 512].astype(np.float32))
        resized = interpolate(chunk, size=(size, size), mode="bilinear",
                              align_corners=False, antialias=True)
        out[start:start + 512] = resized.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def _npz_split(archive, path: Path, split: str) -> XRaySplit:
    images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
    where = f"{path}: {split}"
    if images.dtype != np.uint8:
        raise DataError(f"{where}_images has dtype {images.dtype}, expected uint8")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise DataError(f"{where}_images has shape {images.shape}, expected (N, H, W)")
    if images.shape[1] != images.shape[2] or images.shape[1] < MIN_SIZE:
        raise DataError(f"{where}_images are {images.shape[1]}x{images.shape[2]} px, "
                        f"expected square images of at least {MIN_SIZE} px")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}_labels has dtype {labels.dtype}, expected integers")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}_labels has shape {labels.shape}, expected (N,) or (N, 1)")
    if len(images) != len(labels):
        raise DataError(f"{where} has {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{where} split is empty")
    bad = np.setdiff1d(np.unique(labels), [0, 1])
    if len(bad):
        raise DataError(f"{where}_labels has values {bad[:5].tolist()}, expected only 0 and 1")
    return XRaySplit(images[:, None].copy(), labels.astype(np.int64))


def load_pneumoniamnist(path: str | Path, size: int | None = None) -> XRayData:
    """A MedMNIST ``.npz`` (keys train/val/test ``_images`` and ``_labels``).

    Images uint8 (N, H, W), labels (N,) or (N, 1) in {0, 1}; the val split is
    optional. With `size`, images are resized to size x size.

        data = load_pneumoniamnist("pneumoniamnist.npz", size=64)
    """
    path = Path(path)
    size = None if size is None else _check_size(size)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz (zip) archive, or truncated")
    splits: dict[str, XRaySplit] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            required = {f"{s}_{k}" for s in ("train", "test") for k in ("images", "labels")}
            val_keys = {"val_images", "val_labels"}
            missing = sorted(required - keys) + (sorted(val_keys - keys)
                                                 if keys & val_keys else [])
            if missing:
                raise DataError(f"{path}: missing keys {', '.join(missing)} "
                                f"(found {', '.join(sorted(keys)) or 'none'})")
            for split in ("train", "val", "test"):
                if f"{split}_images" in keys:
                    splits[split] = _npz_split(archive, path, split)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise DataError(f"{path}: unreadable .npz ({exc})") from None
    sizes = {name: split.images.shape[-1] for name, split in splits.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(f"{path}: splits have different image sizes {sizes}")
    if size is not None:
        splits = {name: XRaySplit(_resize(split.images, size), split.labels)
                  for name, split in splits.items()}
    return XRayData(train=splits["train"], val=splits.get("val"), test=splits["test"],
                    source=f"PneumoniaMNIST ({path.name})", licence=PNEUMONIAMNIST_LICENCE,
                    synthetic=False)


# --------------------------------------------------------------------------- Kermany folders

def _read_image(path: Path, transform) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.draft("L", (transform.size, transform.size))  # fast JPEG downscaling
            image.load()
            return transform(image).numpy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _folder_split(directory: Path, transform) -> XRaySplit:
    images, labels = [], []
    for label, name in enumerate(CLASS_FOLDERS):
        folder = directory / name
        if not folder.is_dir():
            present = ", ".join(sorted(p.name for p in directory.iterdir() if p.is_dir()))
            raise DataError(f"{folder}: missing class folder (found: {present or 'none'})")
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        images += [_read_image(path, transform) for path in files]
        labels += [label] * len(files)
    return XRaySplit(np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64))


class _ToSquareGray:
    """Grayscale, resize the short side to `size`, centre-crop, uint8 tensor (1, size, size)."""

    def __init__(self, size: int) -> None:
        from torchvision import transforms

        self.size = size
        self.pipeline = transforms.Compose([
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize(size, antialias=True),
            transforms.CenterCrop(size),
            transforms.PILToTensor(),
        ])

    def __call__(self, image):
        return self.pipeline(image)


def load_kermany(root: str | Path, size: int = 64) -> XRayData:
    """The Kermany folder layout ``ROOT/train|val|test/NORMAL|PNEUMONIA/*.jpeg``.

    ``.jpeg``, ``.jpg`` and ``.png`` files are read, turned grey, resized and
    centre-cropped to size x size; ``val`` is optional. NORMAL is 0, PNEUMONIA 1.

        data = load_kermany("chest_xray", size=128)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    transform = _ToSquareGray(_check_size(size))
    splits: dict[str, XRaySplit] = {}
    for split in ("train", "val", "test"):
        directory = root / split
        if directory.is_dir():
            splits[split] = _folder_split(directory, transform)
        elif split != "val":
            raise DataError(f"{directory}: missing split folder "
                            f"(expected {root}/train, {root}/test and optionally {root}/val)")
    return XRayData(train=splits["train"], val=splits.get("val"), test=splits["test"],
                    source=f"Kermany folder ({root.name})", licence=KERMANY_LICENCE,
                    synthetic=False)
