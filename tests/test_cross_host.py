"""A federation across hosts: three hospital domains and the researcher, each in a network
namespace of its own joined by a bridge (demos/separate_hosts.py), each on its own address
and all hospitals on the same port, TLS on (self-signed, pinned), federation cards
exchanged as files between the admins. The researcher runs one secure federated round and
a DP evaluation at every hospital; each hospital's admin approves what the rules approve
(`review auto --approve-compliant --watch`). Nothing here is on a loopback address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ACCOUNTS_YAML, PROJECT_ROOT, RESEARCHER
from demos import separate_hosts
from demos.local_domain import TRUSTED_POLICIES

pytestmark = pytest.mark.domain
HOSPITALS = {"st-mary": "St Mary", "royal": "Royal Infirmary", "county": "County General"}
PORT = 8443  # the same on every host: they are separate hosts
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # three domains, two cores


def _on(hosts, host: str, *command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([*hosts.prefix(host), sys.executable, *command], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD})
    assert done.returncode == 0, f"{host}: {done.stderr.strip()[-1500:]}"
    return done


def _admin(hosts, host: str, state, *commands: str) -> str:
    """Commands of the hospital's admin at the hospital's host (one process)."""
    return _on(hosts, host, "tests/cross_host_admin.py", str(state), *commands).stdout


@pytest.fixture(scope="module")
def federation_on_hosts(tmp_path_factory):
    reason = separate_hosts.available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("hosts")
    states = {host: root / host / "state" for host in HOSPITALS}
    with separate_hosts.SeparateHosts([*HOSPITALS, "researcher"]) as hosts:
        watchers: list[subprocess.Popen] = []
        try:
            def set_up(index: int, host: str) -> str:
                return _admin(
                    hosts, host, states[host],
                    f"start --name '{HOSPITALS[host]}' --port {PORT} --host "
                    f"{hosts.address(host)} --tls-self-signed --policies {TRUSTED_POLICIES}",
                    f"upload synthetic --name xray --n 900 --size 28 --partition {index}/3 "
                    "--no-progress",
                    f"accounts apply {ACCOUNTS_YAML}", "federation enable",
                    f"federation card --write {root / host}.card.json")

            with ThreadPoolExecutor(len(HOSPITALS)) as pool:
                started = list(pool.map(set_up, range(1, 4), HOSPITALS))
            # the admins exchange cards; each adds the two others' and gives Ada a file
            with ThreadPoolExecutor(len(HOSPITALS)) as pool:
                joined = list(pool.map(lambda host: _admin(
                    hosts, host, states[host],
                    *[f"federation members add {root / other}.card.json"
                      for other in HOSPITALS if other != host],
                    f"token issue --email {RESEARCHER} --write-connection "
                    f"{root / host}.ada.json"), HOSPITALS))
            watchers = [subprocess.Popen(
                [*hosts.prefix(host), sys.executable, "-m", "domain_setup", "review", "auto",
                 "--approve-compliant", "--watch", "1", "--state-dir", str(states[host])],
                cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                stdin=subprocess.DEVNULL) for host in HOSPITALS]
            yield hosts, root, states, started, joined
        finally:
            for watcher in watchers:
                watcher.send_signal(signal.SIGINT)
                watcher.communicate(timeout=60)
            for host in HOSPITALS:
                subprocess.run([*hosts.prefix(host), sys.executable, "-m", "domain_setup",
                                "stop", "--state-dir", str(states[host])], cwd=PROJECT_ROOT,
                               capture_output=True, timeout=120)


def test_each_hospital_serves_https_on_its_own_address_and_adds_the_others_cards(
        federation_on_hosts):
    hosts, root, states, started, joined = federation_on_hosts
    for host, output in zip(HOSPITALS, started):
        assert f"is up at https://{hosts.address(host)}:{PORT}" in output
        audit = (states[host] / "audit.jsonl").read_text()
        assert "domain.insecure_http" not in audit  # TLS: no flag needed off loopback
        card = json.loads((root / f"{host}.card.json").read_text())
        assert card["url"] == f"https://{hosts.address(host)}:{PORT}"
        ada = json.loads((root / f"{host}.ada.json").read_text())
        assert ada["tls_fingerprint"] == card["tls_fingerprint"]
    for host, output in zip(HOSPITALS, joined):
        for other in HOSPITALS:
            if other != host:
                assert f"added {HOSPITALS[other]!r} at https://{hosts.address(other)}:{PORT} " \
                       "from its card (signature verified" in output


def test_one_secure_round_and_a_dp_evaluation_across_the_hosts(federation_on_hosts):
    hosts, root, states, _, _ = federation_on_hosts
    files = [str(root / f"{host}.ada.json") for host in HOSPITALS]
    done = _on(hosts, "researcher", "tests/cross_host_researcher.py", *files, timeout=900)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["urls"] == [f"https://{hosts.address(h)}:{PORT}" for h in HOSPITALS]
    assert set(result["n_samples"]) == set(HOSPITALS.values())
    assert sum(result["n_samples"].values()) == 720  # 80 % of 900 images, over three hosts
    assert result["parameters"]  # the averaged model came back, opened from the shares
    for name, evaluation in result["evaluations"].items():
        assert evaluation["privacy"]["epsilon"] == pytest.approx(1.0), name
        assert 0.0 <= evaluation["metrics"]["auc"] <= 1.0, name
    print(f"cross-host secure round: {result['round_seconds']:.1f} s ({result['phases']})")
    # the admins' review names the members the round used
    first = next(iter(HOSPITALS))
    listing = _admin(hosts, first, states[first], "review list --all")
    secure_ids = [line.split()[0] for line in listing.splitlines()
                  if "secure_train" in line and "approved" in line]
    assert secure_ids, listing
    shown = _admin(hosts, first, states[first], f"review show {secure_ids[0]}")
    assert "parties this hospital, Royal Infirmary, County General" in shown


def test_the_researchers_host_reaches_the_hospitals_only_over_verified_tls(
        federation_on_hosts):
    hosts, root, _, _, _ = federation_on_hosts
    url = f"https://{hosts.address('royal')}:{PORT}/health"
    probe = ("-c", "import sys, requests\n"
             "try:\n    requests.get(sys.argv[1], timeout=5)\n"
             "except requests.exceptions.SSLError:\n    print('refused: not trusted')\n"
             "except requests.RequestException as exc:\n    print('no answer', type(exc).__name__)\n")
    assert _on(hosts, "researcher", *probe, url).stdout.strip() == "refused: not trusted"
    plain = _on(hosts, "researcher", *probe, url.replace("https", "http")).stdout.strip()
    assert plain.startswith("no answer")
