"""Plain HTTP only on loopback (domain_setup/exposure.py): the decision, the CLI's refusal,
and a real domain on a network address, in a network namespace of its own (the address
exists nowhere else, so nothing outside this machine could reach it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.errors import DomainError
from conftest import PROJECT_ROOT
from demos.local_domain import free_port
from domain_setup.exposure import check_exposure
from domain_setup.state import DomainConfig

NETWORK_ADDRESS = "10.77.0.1"  # on the namespace's own lo: not a loopback address


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_flag(host):
    assert check_exposure(DomainConfig(name="x", host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "hospital.example.org"])
def test_a_network_address_needs_the_flag_and_then_warns(host):
    with pytest.raises(DomainError, match=f"refusing to serve plain HTTP on {host}"):
        check_exposure(DomainConfig(name="x", host=host))
    warning = check_exposure(DomainConfig(name="x", host=host, extra={"insecure_http": True}))
    assert warning.startswith(f"INSECURE: plain HTTP on {host}:")


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "domain_setup", *args],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_the_cli_refuses_0_0_0_0_in_one_line_and_writes_nothing(tmp_path):
    refused = _cli("start", "--name", "Open General", "--port", str(free_port()),
                   "--host", "0.0.0.0", "--state-dir", str(tmp_path / "state"))
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "refusing to serve plain HTTP on 0.0.0.0" in refused.stderr
    assert not (tmp_path / "state").exists()


def _in_new_network_namespace() -> tuple[str, ...]:
    """A command prefix running its command in a new network namespace whose lo is up
    and also holds NETWORK_ADDRESS (the domain's server, detached, keeps it alive)."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here: " + probe.stderr.decode().strip())
    return ("unshare", "--net", "sh", "-c",
            f'ip link set lo up && ip addr add {NETWORK_ADDRESS}/8 dev lo && exec "$@"', "sh")


@pytest.mark.domain
def test_a_domain_on_a_network_address_starts_only_with_the_flag_and_audits_it(tmp_path):
    prefix = _in_new_network_namespace()
    state = tmp_path / "state"
    start = ("start", "--name", "Exposed General", "--port", str(free_port()),
             "--host", NETWORK_ADDRESS, "--state-dir", str(state))
    refused = _cli(*start, prefix=prefix)
    assert refused.returncode != 0 and "refusing to serve plain HTTP" in refused.stderr
    started = _cli(*start, "--insecure-http", prefix=prefix)
    try:
        assert started.returncode == 0, started.stderr
        assert f"warning: INSECURE: plain HTTP on {NETWORK_ADDRESS}:" in started.stderr
        assert f"up at http://{NETWORK_ADDRESS}:" in started.stdout
        audited = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()
                   if "domain.insecure_http" in line]
        assert [(e["actor"], e["outcome"], e["host"]) for e in audited] == [
            ("domain", "warning", NETWORK_ADDRESS)]
        assert "INSECURE: plain HTTP" in (state / "logs" / "domain.log").read_text()
    finally:
        _cli("stop", "--state-dir", str(state))
    # the flag was for that start only: the next start without it is refused again
    again = _cli("start", "--state-dir", str(state), prefix=prefix)
    assert again.returncode != 0 and "refusing to serve plain HTTP" in again.stderr
