"""What TLS costs a request: the same domain route over HTTPS and over plain HTTP.

Two domains on this machine's loopback, one serving plain HTTP, one HTTPS with a
self-signed ECDSA P-256 certificate (pinned by its fingerprint, as researchers' clients
do); N requests to /health each way: on a new connection each with one SSL context (TCP,
and for HTTPS the full TLS 1.3 handshake), with `requests.get` (a new session, and so a
new SSL context loading the CA store, each time: what syft's API calls did before they
were sent on the connection's session), and on one kept-alive connection. The baseline is the plain
HTTP request the domain served before TLS, on the same machine, in the same run. The
handshake's cost is the difference of the two new-connection times.

    python bench/bench_tls.py [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import http.client  # noqa: E402
import ssl  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import requests  # noqa: E402

from demos.local_domain import LocalDomain  # noqa: E402
from domain_setup.tls_certificate import trust_own_domain  # noqa: E402


def per_request_ms(get, url: str, n: int) -> float:
    """Median milliseconds of `get(url)` over n calls (after 10 warm-up calls)."""
    for _ in range(10):
        get(url).raise_for_status()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        get(url).raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def handshake_only(url: str):
    """A GET on a new connection each time, its SSL context made once (what a client that
    keeps its context pays: TCP + the TLS handshake)."""
    parsed = urlparse(url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pinned below

    class Answer:
        def __init__(self, status: int):
            self.status = status

        def raise_for_status(self) -> None:
            assert self.status == 200, self.status

    def get(_url: str) -> Answer:
        connection = (http.client.HTTPSConnection(parsed.hostname, parsed.port, context=context)
                      if parsed.scheme == "https" else
                      http.client.HTTPConnection(parsed.hostname, parsed.port))
        connection.request("GET", parsed.path)
        status = connection.getresponse().status
        connection.close()
        return Answer(status)

    return get


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        plain = LocalDomain.start_new("Plain General", Path(scratch) / "plain")
        secure = LocalDomain.start_new("Secure General", Path(scratch) / "tls",
                                       extra_args=("--tls-self-signed",))
        try:
            trust_own_domain(secure.state.load_config())
            results = {}
            for name, domain in (("http", plain), ("https", secure)):
                url = f"{domain.url}/health"
                session = requests.Session()
                results[name] = (per_request_ms(handshake_only(url), url, args.n),
                                 per_request_ms(requests.get, url, args.n),
                                 per_request_ms(session.get, url, args.n))
        finally:
            plain.stop()
            secure.stop()
    (http_new, http_fresh, http_kept) = results["http"]
    (https_new, https_fresh, https_kept) = results["https"]
    print(f"GET /health, median ms of {args.n}:    http   https")
    for label, plain, secure in (("new connection, one SSL context", http_new, https_new),
                                 ("requests.get (new session each)", http_fresh, https_fresh),
                                 ("kept-alive session", http_kept, https_kept)):
        print(f"  {label:<34} {plain:6.2f}  {secure:6.2f}   ratio {secure / plain:5.2f}")
    print(f"TLS handshake per new connection: {https_new - http_new:.2f} ms; a client that "
          f"builds its SSL context per request pays {https_fresh - http_fresh:.2f} ms; "
          f"on a kept-alive connection {https_kept - http_kept:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
