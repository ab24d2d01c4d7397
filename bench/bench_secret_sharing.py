"""Seeded secret sharing of a ResNet-18 state dict, against an AES-256-CTR keystream.

Shares the state dict of a ResNet-18 for pneumonia X-rays (1 input channel, 2
classes, ~11.2 M values) among `--parties` parties as one correction share plus
n-1 seeds, reconstructs it from them, and times that beside the baseline: an
AES-256-CTR keystream (from `cryptography`, written independently of the code
under test) of the (n-1) x values 64-bit words that sharing needs, and of the
2(n-1) x values words that seeded share + reconstruct expand in all (each seed
is expanded once by its sender and once by its receiver). Best of `--repeats`
for each, interleaved. Also times the plain path (n full shares) and counts the
bytes that leave a party per round, sealed.

The same seeded path in the 32-bit ring (uint32 words: half the keystream to
expand, half the bytes to send) is timed against the same baseline, the keystream
of (n-1) x values x 8 bytes that the 64-bit ring defines, and against the keystream
of the 2 (n-1) x values x 4 bytes it actually expands; and its sealed bytes per
party are set against the float32 model.

    .venv/bin/python bench/bench_secret_sharing.py --parties 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import wire  # noqa: E402
from common.errors import SharingError  # noqa: E402
from common.sealing import (  # noqa: E402
    generate_keypair, open_seeded_and_sum, seal, seal_seeded_shares,
)
from common.secret_sharing import (  # noqa: E402
    reconstruct_seeded_state_dict, reconstruct_state_dict, seeded_share_state_dict,
    share_state_dict,
)

GOAL_RATIO = 1.5
GOAL_BYTES = 1.05
_CHUNK = 1 << 20  # keystream bytes per call in the baseline


def resnet18_state_dict() -> dict[str, np.ndarray]:
    """Random float32 weights (int64 counters) in torchvision resnet18's shapes.

    One input channel (grey X-rays), two classes (normal, pneumonia).
    """
    import torch
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=2)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    rng = np.random.default_rng(0)  # benchmark data only
    return {name: (rng.normal(scale=0.05, size=tuple(t.shape)).astype(np.float32)
                   if t.is_floating_point() else t.numpy().copy())
            for name, t in model.state_dict().items()}


def keystream(n_bytes: int) -> np.ndarray:
    """`n_bytes` of AES-256-CTR keystream under a fresh key, in a fresh buffer."""
    out = np.empty(n_bytes, dtype=np.uint8)
    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(bytes(16))).encryptor()
    zeros, raw = memoryview(bytes(_CHUNK)), memoryview(out)
    for start in range(0, n_bytes, _CHUNK):
        stop = min(start + _CHUNK, n_bytes)
        encryptor.update_into(zeros[: stop - start], raw[start:stop])
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds `fn()` took, and what it returned."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def max_error(restored: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(restored[k].astype(np.float64) - w).max(initial=0))
               for k, w in weights.items())


def sealed_bytes_per_party(weights: dict[str, np.ndarray], n: int,
                           ring_bits: int = 64) -> tuple[int, int, int, float]:
    """(correction, all seeds, unseeded shares) bytes one party sends, sealed, and the
    seconds an aggregator takes to open its correction and seeds and sum them."""
    keys = [generate_keypair() for _ in range(n)]
    publics = [public for _, public in keys]
    outboxes = [seal_seeded_shares(weights, private, publics, "bench", ring_bits=ring_bits)
                for private, _ in keys]
    seconds, _ = timed(lambda: open_seeded_and_sum(
        keys[0][0], publics, "bench", outboxes[0][0],
        [(publics[k], outboxes[k][1][0]) for k in range(1, n)]))
    correction, seeds = outboxes[0]
    one_share = share_state_dict(weights, 1)[0]  # same size as any party's share
    unseeded = n * len(seal(wire.dumps(one_share), publics[0]))
    return len(correction), sum(len(s) for s in seeds if s is not None), unseeded, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, default=3, help="number of parties (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs (default 5)")
    args = parser.parse_args(argv)
    if args.parties < 2 or args.repeats < 1:
        parser.error("--parties must be >= 2 and --repeats >= 1")

    weights = resnet18_state_dict()
    values = sum(w.size for w in weights.values())
    n = args.parties
    print(f"state dict: {len(weights)} arrays, {values / 1e6:.2f} M values, {n} parties")

    # Correctness first: the benchmark times the real thing.
    seeded_error = max_error(reconstruct_seeded_state_dict(*seeded_share_state_dict(weights, n, 0)),
                             weights)
    seeded32_error = max_error(reconstruct_seeded_state_dict(
        *seeded_share_state_dict(weights, n, 0, ring_bits=32)), weights)
    plain_error = max_error(reconstruct_state_dict(share_state_dict(weights, n)), weights)
    assert max(seeded_error, seeded32_error, plain_error) <= 2.0 ** -17, \
        (seeded_error, seeded32_error, plain_error)

    share_bytes = (n - 1) * values * 8
    expanded32 = 2 * (n - 1) * values * 4  # what the 32-bit path expands, sender + receiver
    streams = sorted({share_bytes, 2 * share_bytes, expanded32})
    names = ("seeded_share", "seeded_reconstruct", "seeded32_share", "seeded32_reconstruct",
             "share", "reconstruct")
    timings: dict[str, list[float]] = {name: [] for name in names}
    stream_times: dict[int, list[float]] = {size: [] for size in streams}
    for _ in range(args.repeats):
        for size in streams:
            stream_times[size].append(timed(lambda: keystream(size))[0])
        for ring_bits, prefix in ((64, "seeded"), (32, "seeded32")):
            seconds, (correction, seeds) = timed(
                lambda: seeded_share_state_dict(weights, n, 0, ring_bits=ring_bits))
            timings[f"{prefix}_share"].append(seconds)
            timings[f"{prefix}_reconstruct"].append(
                timed(lambda: reconstruct_seeded_state_dict(correction, seeds))[0])
            del correction
        seconds, parties = timed(lambda: share_state_dict(weights, n))
        timings["share"].append(seconds)
        timings["reconstruct"].append(timed(lambda: reconstruct_state_dict(parties))[0])
        del parties
    best = {name: min(times) for name, times in timings.items()}
    seeded = min(map(sum, zip(timings["seeded_share"], timings["seeded_reconstruct"])))
    seeded32 = min(map(sum, zip(timings["seeded32_share"], timings["seeded32_reconstruct"])))
    plain = min(map(sum, zip(timings["share"], timings["reconstruct"])))
    best_stream = {size: min(times) for size, times in stream_times.items()}
    stream, stream_2x = best_stream[share_bytes], best_stream[2 * share_bytes]
    stream32 = best_stream[expanded32]

    print(f"AES-256-CTR keystream, {share_bytes / 1e6:.0f} MB ((n-1) x values words): "
          f"{stream:.3f} s ({share_bytes / stream / 1e9:.2f} GB/s)")
    print(f"AES-256-CTR keystream, {2 * share_bytes / 1e6:.0f} MB (what seeded share + "
          f"reconstruct expand): {stream_2x:.3f} s")
    print(f"seeded share (encode - n-1 expanded seeds):      {best['seeded_share']:.3f} s")
    print(f"seeded reconstruct (correction + seeds, decode): {best['seeded_reconstruct']:.3f} s")
    print(f"seeded share+reconstruct:                        {seeded:.3f} s "
          f"(max error {seeded_error:.2g})")
    print(f"seeded share+reconstruct / keystream of {share_bytes / 1e6:.0f} MB: "
          f"{seeded / stream:.2f} (goal <= {GOAL_RATIO})")
    print(f"seeded share+reconstruct / keystream of the {2 * share_bytes / 1e6:.0f} MB it "
          f"expands: {seeded / stream_2x:.2f}")
    print(f"plain share+reconstruct (n full shares):         {plain:.3f} s "
          f"(share {best['share']:.3f}, reconstruct {best['reconstruct']:.3f}; "
          f"/ keystream of {share_bytes / 1e6:.0f} MB: {plain / stream:.2f})")
    print("32-bit ring (uint32 words):")
    print(f"  seeded share:       {best['seeded32_share']:.3f} s")
    print(f"  seeded reconstruct: {best['seeded32_reconstruct']:.3f} s")
    print(f"  seeded share+reconstruct: {seeded32:.3f} s (max error {seeded32_error:.2g})")
    print(f"  / keystream of {share_bytes / 1e6:.0f} MB ((n-1) x values x 8 bytes, the 64-bit "
          f"baseline): {seeded32 / stream:.2f} (goal <= {GOAL_RATIO})")
    print(f"  / keystream of the {expanded32 / 1e6:.0f} MB it expands (2 (n-1) x values x 4 "
          f"bytes): {seeded32 / stream32:.2f}")

    correction_bytes, seed_bytes, unseeded_bytes, open_seconds = \
        sealed_bytes_per_party(weights, n)
    model_bytes = sum(w.nbytes for w in weights.values())
    sent = correction_bytes + seed_bytes
    print(f"aggregator: open correction + {n - 1} seeds, verify, expand and sum: "
          f"{open_seconds:.3f} s")
    print(f"bytes leaving a party per round, sealed: correction {correction_bytes / 1e6:.2f} MB "
          f"+ {n - 1} seeds {seed_bytes} B = {sent / 1e6:.2f} MB; unseeded: n shares "
          f"{unseeded_bytes / 1e6:.2f} MB")
    print(f"  / plain model ({model_bytes / 1e6:.2f} MB as stored): {sent / model_bytes:.3f} "
          f"(goal <= {GOAL_BYTES}); unseeded {unseeded_bytes / model_bytes:.3f}")
    print(f"  / model as 64-bit ring words ({values * 8 / 1e6:.2f} MB): "
          f"{sent / (values * 8):.3f}; unseeded {unseeded_bytes / (values * 8):.3f}")
    try:
        correction32, seed32, _, open32 = sealed_bytes_per_party(weights, n, ring_bits=32)
        how = "sealed"
    except SharingError as exc:  # common.wire cannot carry 32-bit words yet
        print(f"32-bit ring: cannot seal ({exc})")
        correction32, seed32, open32 = correction_bytes - 4 * values, seed_bytes, float("nan")
        how = "projected from the 64-bit correction minus 4 bytes a value"
    sent32 = correction32 + seed32
    print(f"32-bit ring: aggregator open + expand + sum: {open32:.3f} s")
    print(f"32-bit ring: bytes leaving a party per round ({how}): correction "
          f"{correction32 / 1e6:.2f} MB + {n - 1} seeds {seed32} B = {sent32 / 1e6:.2f} MB")
    print(f"  / plain float32 model ({model_bytes / 1e6:.2f} MB): {sent32 / model_bytes:.4f} "
          f"(goal <= {GOAL_BYTES})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
