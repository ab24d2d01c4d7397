"""A federation across hosts: three hospital domains and the researcher, each in a network
namespace of its own joined by a bridge (demos/separate_hosts.py), each on its own address
and all hospitals on the same port, TLS on (self-signed, pinned), federation cards
exchanged as files between the admins (demos/federation_on_hosts.py). The researcher runs
one secure federated round and a DP evaluation at every hospital; each hospital's admin
approves what the rules approve. Nothing here is on a loopback address."""

from __future__ import annotations

import json

import pytest

from demos import separate_hosts
from demos.federation_on_hosts import HOSPITALS, FederationOnHosts

pytestmark = pytest.mark.domain


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    reason = separate_hosts.available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("hosts")
    with separate_hosts.SeparateHosts([*HOSPITALS, "researcher"]) as hosts, \
            FederationOnHosts(root, hosts) as federation:
        yield federation


def test_each_hospital_serves_https_on_its_own_address_and_adds_the_others_cards(federation):
    for host, output in zip(HOSPITALS, federation.started):
        assert f"is up at {federation.url(host)}" in output
        assert federation.url(host).startswith("https://10.88.0.")
        audit = (federation.states[host] / "audit.jsonl").read_text()
        assert "domain.insecure_http" not in audit  # TLS: no flag needed off loopback
        card = json.loads(federation.card(host).read_text())
        assert card["url"] == federation.url(host)
        ada = json.loads((federation.root / f"{host}.ada.json").read_text())
        assert ada["tls_fingerprint"] == card["tls_fingerprint"]
    for host, output in zip(HOSPITALS, federation.joined):
        for other in HOSPITALS:
            if other != host:
                assert f"added {HOSPITALS[other]!r} at {federation.url(other)} from its card " \
                       "(signature verified" in output


def test_one_secure_round_and_a_dp_evaluation_across_the_hosts(federation):
    result = federation.researcher("-m", "demos.cross_host_researcher",
                                   *federation.connection_files)
    assert result["urls"] == [federation.url(h) for h in HOSPITALS]
    assert set(result["n_samples"]) == set(HOSPITALS.values())
    assert sum(result["n_samples"].values()) == 720  # 80 % of 900 images, over three hosts
    assert result["parameters"]  # the averaged model came back, opened from the shares
    for name, evaluation in result["evaluations"].items():
        assert evaluation["privacy"]["epsilon"] == pytest.approx(1.0), name
        assert 0.0 <= evaluation["metrics"]["auc"] <= 1.0, name
    # the admin's review names the members the round used
    first = next(iter(HOSPITALS))
    listing = federation.admin(first, "review list --all")
    secure = [line.split()[0] for line in listing.splitlines()
              if "secure_train" in line and "approved" in line]
    assert secure, listing
    shown = federation.admin(first, f"review show {secure[0]}")
    assert "parties this hospital, Royal Infirmary, County General" in shown


def test_the_researchers_host_reaches_the_hospitals_only_over_verified_tls(federation):
    url = f"{federation.url('royal')}/health"
    probe = ("-c", "import sys, requests\n"
             "try:\n    requests.get(sys.argv[1], timeout=5)\n"
             "except requests.exceptions.SSLError:\n    print('refused: not trusted')\n"
             "except requests.RequestException as exc:\n    print('no answer', type(exc).__name__)\n")
    assert federation.run("researcher", *probe, url).strip() == "refused: not trusted"
    plain = federation.run("researcher", *probe, url.replace("https", "http")).strip()
    assert plain.startswith("no answer")
