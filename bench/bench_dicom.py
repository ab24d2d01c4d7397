"""Reading a PACS export (DICOM) against the PNG folder path, on the same images.

Writes N synthetic radiographs at SOURCE px twice in a temporary directory (not timed):
as a Kermany PNG folder (8-bit greyscale, `folder:`), and as a DICOM export (`dicom:`,
12-bit, half MONOCHROME1, windowed; uncompressed, or RLE Lossless or JPEG 2000 Lossless
with --syntax), then times `load_source` of each to the same image size: what
`python -m domain_setup upload` does before it sends anything (sending is the same
arrays either way: bench_upload.py). Prints images per second of both and their ratio.
PNG is the baseline: it is the format a hospital would otherwise export to.

    .venv/bin/python bench/bench_dicom.py --n 400 --source-size 512 --size 128
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless  # noqa: E402

from datasets.xray import generate, load_source  # noqa: E402
from dicom_files import write_radiograph  # noqa: E402  (tests/: the tests' own writer)

SYNTAXES = {"uncompressed": ExplicitVRLittleEndian, "rle": RLELossless,
            "j2k": JPEG2000Lossless}


def write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The Kermany layout: train/ and test/ (a fifth), each NORMAL/ and PNEUMONIA/."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        split = "test" if i % 5 == 0 else "train"
        folder = root / split / ("PNEUMONIA" if label else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0], mode="L").save(folder / f"img{i:05d}.png")


def write_dicom_export(root: Path, images: np.ndarray, labels: np.ndarray, syntax) -> None:
    root.mkdir(parents=True)
    rows = ["file,label,split"]
    for i, (image, label) in enumerate(zip(images, labels)):
        photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
        write_radiograph(root / f"img{i:05d}.dcm", image[0], photometric=photometric,
                         syntax=syntax)
        rows.append(f"img{i:05d}.dcm,{int(label)},{'test' if i % 5 == 0 else 'train'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def timed_load(spec: str, size: int, repeats: int) -> float:
    """Best of `repeats` seconds of `load_source(spec)` (the files in the page cache)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        data = load_source(spec, size=size)
        best = min(best, time.perf_counter() - started)
    assert len(data.train) + len(data.test) > 0
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="images (default 400)")
    parser.add_argument("--source-size", type=int, default=512, metavar="PX",
                        help="side of the exported images (default 512)")
    parser.add_argument("--size", type=int, default=128, metavar="PX",
                        help="side after loading (default 128)")
    parser.add_argument("--syntax", choices=sorted(SYNTAXES), default="uncompressed")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    images, labels = generate(args.n, size=args.source_size, pneumonia_fraction=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_png_folder(root / "png", images, labels)
        write_dicom_export(root / "dicom", images, labels, SYNTAXES[args.syntax])
        png = timed_load(f"folder:{root / 'png'}", args.size, args.repeats)
        dicom = timed_load(f"dicom:{root / 'dicom'}", args.size, args.repeats)
    print(f"{args.n} radiographs at {args.source_size} px, loaded at {args.size} px "
          f"(best of {args.repeats}):")
    print(f"  PNG folder (8-bit, folder:):          {png:.2f} s ({args.n / png:.0f} images/s)")
    print(f"  DICOM export (12-bit, {args.syntax}): {dicom:.2f} s "
          f"({args.n / dicom:.0f} images/s)")
    print(f"DICOM / PNG time ratio: {dicom / png:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
