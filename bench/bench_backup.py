"""Backup and restore of a 1 GB state directory against tar piped through openssl.

Starts a fresh domain on a loopback port and fills it with real uploads (one synthetic set
of N X-rays and its mocks, uploaded under several names until the state directory holds
--gigabytes; generating and uploading are not timed), then, the domain running, times in
the same run, alternating, best of --repeats:

* ours: `python -m domain_setup backup --to FILE` (a process of its own, interpreter and
  scrypt included), and `restore --from FILE --state-dir NEW` (every file fsync'd);
* baseline: `tar -cf - -C STATE . | openssl enc -aes-256-ctr -pbkdf2` into a file
  (fsync'd), and `openssl enc -d ... | tar -xf - -C NEW` then `sync -f NEW`: what a
  sceptical admin would script, without a consistent database snapshot and without
  authentication (CTR mode: a flipped bit restores silently);

and prints seconds, MB/s of the state directory and the ratios.

    .venv/bin/python bench/bench_backup.py --gigabytes 1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demos.local_domain import LocalDomain  # noqa: E402
from domain_setup import PROJECT_ROOT  # noqa: E402

PASSPHRASE = "the benchmark's backup passphrase"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0,
                        help="size of the state directory to build (default 1)")
    parser.add_argument("--n", type=int, default=16000,
                        help="synthetic images of the set uploaded again and again (64 px)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (best counts)")
    parser.add_argument("--workdir", help="where to build it (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.gigabytes <= 0 or args.n < 10 or args.repeats < 1:
        parser.error("--gigabytes > 0, --n >= 10 and --repeats >= 1")
    return args


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def fill(domain: LocalDomain, goal: int, n: int) -> None:
    """Upload one synthetic set under new names until the state directory holds `goal`."""
    import syft as sy

    from common import syft_compat
    from domain_setup.admin.upload import build_dataset, send_dataset

    base, _card, n_bytes = build_dataset("base", "synthetic", size=64, n=n, seed=0)
    pairs = [(a.name, a.data, a.mock) for a in base.asset_list]
    session = domain.admin.session
    client = session.client()
    copies = math.ceil(max(0, goal - tree_bytes(domain.state.root)) / n_bytes)
    for copy in range(copies):
        dataset = sy.Dataset(name=f"xray-{copy}", summary="SYNTHETIC chest X-rays (benchmark)")
        for name, data, mock in pairs:
            dataset.add_asset(sy.Asset(name=name, data=data, mock=mock))
        with syft_compat.muted():
            send_dataset(session, client, dataset, show_progress=False)
        print(f"  uploaded copy {copy + 1}/{copies} ({n_bytes / 1e6:.0f} MB)", file=sys.stderr)


def timed(command: list[str] | str, *, shell: bool = False, env: dict | None = None) -> float:
    """Seconds `command` takes, from a clean page cache (no dirty pages of earlier steps to
    write back: the first timed step after the uploads had paid for theirs)."""
    os.sync()
    started = time.perf_counter()
    subprocess.run(command, shell=shell, check=True, cwd=PROJECT_ROOT, env=env,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not shutil.which("openssl"):
        print("error: openssl is not installed (the baseline)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="pneumosyft-bench-backup-",
                                     dir=args.workdir) as workdir:
        work = Path(workdir)
        key = work / "passphrase"
        key.write_text(PASSPHRASE + "\n")
        key.chmod(0o600)
        with LocalDomain.start_new("Bench Backup", work / "state") as domain:
            state = domain.state.root
            fill(domain, int(args.gigabytes * 1e9), args.n)
            size = tree_bytes(state)
            ours_backup, ours_restore, base_backup, base_restore = [], [], [], []
            cli = [sys.executable, "-m", "domain_setup"]
            for repeat in range(args.repeats):
                ours, theirs = work / "ours.pnbak", work / "theirs.tar.enc"
                restored, extracted = work / "restored", work / "extracted"
                ours_backup.append(timed([*cli, "backup", "--to", str(ours), "--state-dir",
                                          str(state), "--passphrase-file", str(key),
                                          "--no-progress"]))
                base_backup.append(timed(
                    f"tar -cf - -C '{state}' . | openssl enc -aes-256-ctr -pbkdf2 "
                    f"-pass file:'{key}' -out '{theirs}' && sync '{theirs}'", shell=True))
                ours_restore.append(timed([*cli, "restore", "--from", str(ours), "--state-dir",
                                           str(restored), "--passphrase-file", str(key),
                                           "--no-progress"]))
                extracted.mkdir()
                base_restore.append(timed(
                    f"openssl enc -d -aes-256-ctr -pbkdf2 -pass file:'{key}' -in '{theirs}' "
                    f"| tar -xf - -C '{extracted}' && sync -f '{extracted}'", shell=True))
                sizes = (ours.stat().st_size, theirs.stat().st_size)
                for path in (ours, theirs):
                    path.unlink()
                for path in (restored, extracted):
                    shutil.rmtree(path)
    megabytes = size / 1e6
    print(f"state directory of a running domain: {megabytes:,.0f} MB, best of {args.repeats}; "
          f"archives {sizes[0] / 1e6:,.0f} MB (ours) and "
          f"{sizes[1] / 1e6:,.0f} MB (tar | openssl)")
    rows = (("backup", ours_backup, base_backup), ("restore", ours_restore, base_restore))
    for what, ours_times, base_times in rows:
        mine, theirs = min(ours_times), min(base_times)
        print(f"  {what:<8} ours {mine:6.2f} s {megabytes / mine:7.1f} MB/s   "
              f"tar | openssl {theirs:6.2f} s {megabytes / theirs:7.1f} MB/s   "
              f"ratio {mine / theirs:.2f}  (all: ours "
              f"{', '.join(f'{s:.2f}' for s in ours_times)}; baseline "
              f"{', '.join(f'{s:.2f}' for s in base_times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
