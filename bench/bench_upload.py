"""Upload rate of X-rays to a domain against a plain file copy of the same bytes.

Starts a fresh domain on a loopback port and builds a synthetic dataset of N images (by
default enough that the private assets alone are >= 100 MB; generating it is not timed),
then in the same run

* upload: the admin's upload of that dataset (`domain_setup.admin.upload.send_dataset`,
  the span `python -m domain_setup upload` reports as its MB/s): private and mock arrays
  streamed into syft's blob store, the twins and the dataset stored with syft's calls;
* file copy: the very same arrays written to a file in the same temporary directory
  (fsync'd, not timed), then `shutil.copyfile` of it and an fsync of the copy (timed),

and prints both rates (MB of the private and mock arrays per second) and their ratio.

    .venv/bin/python bench/bench_upload.py --n 25000 --size 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demos.local_domain import LocalDomain  # noqa: E402
from domain_setup.admin.upload import build_dataset, send_dataset  # noqa: E402

PRIVATE_BYTES_GOAL = 100_000_000


def default_n(size: int) -> int:
    """Images whose private assets (uint8 images and int64 labels) reach >= 100 MB."""
    return -(-PRIVATE_BYTES_GOAL // (size * size + 8))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None,
                        help="synthetic images (default: private assets >= 100 MB)")
    parser.add_argument("--size", type=int, default=64, metavar="PX",
                        help="image side in pixels (default 64)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed repeats of each; the best counts (default 2)")
    args = parser.parse_args(argv)
    args.n = args.n if args.n is not None else default_n(args.size)
    for option in ("n", "repeats"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be at least 1")
    return args


def arrays_of(dataset) -> list:
    return [array for asset in dataset.asset_list for array in (asset.data, asset.mock)]


def copy_seconds(source: Path, target: Path) -> float:
    """`shutil.copyfile` and an fsync of the copy, timed; the copy is removed after."""
    target.unlink(missing_ok=True)
    started = time.perf_counter()
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-upload-") as workdir:
        work = Path(workdir)
        with LocalDomain.start_new("Bench Upload", work / "state") as domain:
            session = domain.admin.session
            client = session.client()
            upload_seconds, copies = [], []
            for repeat in range(args.repeats):
                dataset, _card, n_bytes = build_dataset(f"xray-{repeat}", "synthetic",
                                                        size=args.size, n=args.n, seed=0)
                arrays = arrays_of(dataset)
                private_bytes = sum(a.data.nbytes for a in dataset.asset_list)
                source = work / "arrays.bin"
                with open(source, "wb") as out:  # the same bytes, on the same disk
                    for array in arrays:
                        out.write(memoryview(array).cast("B"))
                    out.flush()
                    os.fsync(out.fileno())
                copies.append(copy_seconds(source, work / "arrays-copy.bin"))
                started = time.perf_counter()
                send_dataset(session, client, dataset, show_progress=False)
                upload_seconds.append(time.perf_counter() - started)
                source.unlink()
                del dataset, arrays
    best_upload, best_copy = min(upload_seconds), min(copies)
    upload_rate, copy_rate = n_bytes / 1e6 / best_upload, n_bytes / 1e6 / best_copy
    print(f"upload of {args.n} synthetic X-rays at {args.size} px: {n_bytes / 1e6:.1f} MB "
          f"(private {private_bytes / 1e6:.1f} MB and mocks), best of {args.repeats}")
    print(f"  upload to the domain:    {best_upload:6.2f} s  {upload_rate:8.1f} MB/s "
          f"(all: {', '.join(f'{s:.2f}' for s in upload_seconds)} s; goal >= 50 MB/s)")
    print(f"  plain file copy (fsync): {best_copy:6.2f} s  {copy_rate:8.1f} MB/s "
          f"(all: {', '.join(f'{s:.2f}' for s in copies)} s)")
    print(f"upload / file copy rate ratio: {upload_rate / copy_rate:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
