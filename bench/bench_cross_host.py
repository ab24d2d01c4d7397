"""A secure federated round across hosts against the same round on one machine's loopback.

Three hospital domains (TLS, self-signed and pinned; 900 synthetic X-rays at 28 px, IID)
and the researcher: once each on a host of its own (network namespaces joined by a bridge,
demos/separate_hosts.py), once all on 127.0.0.1. Same code, same data, same machine; the
researcher runs ROUNDS secure rounds (the first warms the domains up) and the median of the
later rounds is compared. Prints the ratio cross-host / loopback (1.0: the network costs
nothing measurable; a veth bridge adds microseconds, a real hospital WAN adds its RTT per
request, about 40 requests a round).

    python bench/bench_cross_host.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demos import separate_hosts  # noqa: E402
from demos.federation_on_hosts import HOSPITALS, FederationOnHosts  # noqa: E402


def rounds_on(root: Path, hosts, rounds: int) -> list[float]:
    with FederationOnHosts(root, hosts) as federation:
        result = federation.researcher("-m", "demos.cross_host_researcher", "--rounds",
                                       str(rounds), *federation.connection_files)
    return result["round_seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    reason = separate_hosts.available()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        loopback = rounds_on(Path(scratch) / "loopback", None, args.rounds)
        with separate_hosts.SeparateHosts([*HOSPITALS, "researcher"]) as hosts:
            across = rounds_on(Path(scratch) / "hosts", hosts, args.rounds)
    base, measured = statistics.median(loopback[1:]), statistics.median(across[1:])
    print(f"secure round, 3 hospitals, TLS: loopback {base:.2f} s, across hosts {measured:.2f} s"
          f" (median of rounds 2-{args.rounds}; first rounds {loopback[0]:.2f} / {across[0]:.2f} s)")
    print(f"ratio cross-host / loopback: {measured / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
