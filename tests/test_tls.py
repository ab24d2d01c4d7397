"""TLS (common/tls.py, domain_setup/tls_certificate.py): the certificate a domain serves,
the fingerprint its connection files carry, and every client checking it — the admin's CLI,
`scientist.connect`, the blob upload, and a stock syft client following the README recipe.
One domain serves the live tests: first with a self-signed certificate, then with one the
hospital's own CA issued."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from common import tls
from common.errors import DomainError
from conftest import PROJECT_ROOT, RESEARCHER, start_hospital
from demos.local_domain import TRUSTED
from domain_setup import tls_certificate
from domain_setup.state import DomainConfig, StateDir
from tls_files import hospital_ca, server_certificate

STOCK_RECIPE = PROJECT_ROOT / "docs" / "stock_client_over_tls.py"


# -- decisions ----------------------------------------------------------------------
@pytest.mark.parametrize("written", [
    "sha256 Fingerprint=0E:8B:C5:7D:ED:A8:37:DF:E1:99:F5:92:52:06:97:05:66:39:37:A7:F1:5E:87:32:"
    "2A:93:6F:29:0B:C6:40:D9",
    "0e8bc57deda837dfe199f59252069705663937a7f15e87322a936f290bc640d9",
    "SHA256:0E8BC57DEDA837DFE199F59252069705663937A7F15E87322A936F290BC640D9"])
def test_a_fingerprint_is_read_in_every_usual_spelling(written):
    assert tls.normalize_fingerprint(written) == (
        "0E:8B:C5:7D:ED:A8:37:DF:E1:99:F5:92:52:06:97:05:66:39:37:A7:F1:5E:87:32:2A:93:6F:29:"
        "0B:C6:40:D9")


def test_a_pin_is_kept_under_every_spelling_of_its_host():
    tls.trust("https://Royal.example.org.:443/", fingerprint="ab" * 32)
    try:
        for spelling in ("https://royal.example.org", "https://ROYAL.example.org:443"):
            assert tls.trusted(spelling).fingerprint.startswith("AB:AB")
        tls.trust("https://röntgen-klinik.example:8443", fingerprint="cd" * 32)
        # requests sends the IDNA form: the pin is looked up under it
        assert tls.trusted("https://xn--rntgen-klinik-imb.example:8443").fingerprint.startswith(
            "CD:CD")
    finally:
        tls.trust("https://royal.example.org", replace=True)
        tls.trust("https://röntgen-klinik.example:8443", replace=True)


@pytest.mark.parametrize("written", ["", "AB:CD", "zz" * 32, "0e" * 33, None])
def test_a_malformed_fingerprint_is_one_line(written):
    with pytest.raises(DomainError, match="64 hex digits"):
        tls.normalize_fingerprint(written)


def test_a_pin_for_plain_http_or_with_a_bundle_too_is_refused(tmp_path):
    with pytest.raises(DomainError, match="plain HTTP"):
        tls.trust("http://10.0.0.2:8081", fingerprint="ab" * 32)
    with pytest.raises(DomainError, match="not both"):
        tls.trust("https://10.0.0.2:8081", fingerprint="ab" * 32, ca_bundle=__file__)
    with pytest.raises(DomainError, match="is not a file"):
        tls.trust("https://10.0.0.2:8081", ca_bundle=str(tmp_path / "none.pem"))


def test_the_start_options_combine_as_the_help_says(tmp_path):
    state = StateDir(tmp_path / "state")
    with pytest.raises(DomainError, match="not both"):
        tls_certificate.checked_choice(state, None, cert="a", key="b", self_signed=True)
    with pytest.raises(DomainError, match="go together"):
        tls_certificate.checked_choice(state, None, cert="a", key=None, self_signed=False)
    with pytest.raises(DomainError, match="is not a file"):
        tls_certificate.checked_choice(state, None, cert=str(tmp_path / "x"),
                                       key=str(tmp_path / "y"), self_signed=False)
    chosen = tls_certificate.checked_choice(state, None, cert=None, key=None, self_signed=True)
    assert chosen["self_signed"] and chosen["cert"].startswith(str(tmp_path))
    # once on, TLS stays on: a later start without options keeps what the state dir holds
    assert tls_certificate.checked_choice(state, chosen, cert=None, key=None,
                                          self_signed=False) == chosen
    assert tls_certificate.checked_choice(state, None, cert=None, key=None,
                                          self_signed=False) is None


def _self_signed_config(tmp_path, host="10.20.30.40") -> tuple[StateDir, DomainConfig]:
    state = StateDir(tmp_path / "state")
    config = DomainConfig(name="Cert General", host=host, port=8443)
    config.extra["tls"] = tls_certificate.checked_choice(state, None, cert=None, key=None,
                                                         self_signed=True)
    return state, config


def test_the_self_signed_pair_is_made_once_private_and_names_the_host(tmp_path):
    state, config = _self_signed_config(tmp_path)
    assert tls_certificate.ensure_certificate(state, config) is None
    first = tls_certificate.fingerprint(config)
    assert tls_certificate.ensure_certificate(state, config) is None
    assert tls_certificate.fingerprint(config) == first  # kept: pinned files stay valid
    cert, key = (tmp_path / "state" / "tls" / name for name in ("cert.pem", "key.pem"))
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "state" / "tls").stat().st_mode & 0o777) == "0o700"
    shown = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-ext",
                            "subjectAltName", "-in", str(cert)], capture_output=True, text=True,
                           check=True).stdout
    assert tls.normalize_fingerprint(shown.splitlines()[0]) == first  # what the admin reads out
    assert "IP Address:10.20.30.40" in shown and "IP Address:127.0.0.1" in shown
    assert config.url == "https://10.20.30.40:8443"


def test_a_key_that_is_not_the_certificates_is_refused_in_one_line(tmp_path):
    ca = hospital_ca(tmp_path)
    cert, _ = server_certificate(tmp_path, ca, "10.20.30.40", stem="one")
    _, other_key = server_certificate(tmp_path, ca, "10.20.30.40", stem="two")
    state = StateDir(tmp_path / "state")
    config = DomainConfig(name="Cert General", host="10.20.30.40", port=8443)
    config.extra["tls"] = tls_certificate.checked_choice(
        state, None, cert=str(cert), key=str(other_key), self_signed=False)
    with pytest.raises(DomainError, match="is the key the certificate's") as refused:
        tls_certificate.ensure_certificate(state, config)
    assert "\n" not in str(refused.value)


def test_an_expired_certificate_is_refused_and_one_near_its_end_warned(tmp_path):
    ca = hospital_ca(tmp_path)
    state = StateDir(tmp_path / "state")
    for days, outcome in ((-1, "expired on"), (10, "expires in")):
        cert, key = server_certificate(tmp_path, ca, "10.20.30.40", days=days, stem=str(days))
        config = DomainConfig(name="Cert General", host="10.20.30.40", port=8443)
        config.extra["tls"] = tls_certificate.checked_choice(
            state, None, cert=str(cert), key=str(key), self_signed=False)
        if days < 0:
            with pytest.raises(DomainError, match=outcome):
                tls_certificate.ensure_certificate(state, config)
        else:
            assert outcome in tls_certificate.ensure_certificate(state, config)


# -- a live domain --------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_domain(tmp_path_factory):
    domain = start_hospital(tmp_path_factory.mktemp("tls") / "state", "Secure General",
                            extra_args=(*TRUSTED, "--tls-self-signed"))
    yield domain
    domain.stop()


@pytest.fixture(scope="module")
def ada_file(tls_domain):
    return tls_domain.researcher_file(RESEARCHER)


def _pinned_again(url: str, fingerprint: str) -> None:
    tls.trust(url, fingerprint=fingerprint, replace=True)  # as the other tests expect


@pytest.mark.domain
def test_the_domain_serves_https_and_every_client_checks_its_pin(tls_domain, ada_file):
    from scientist import connect

    status = json.loads(tls_domain.cli("status", "--json"))
    assert status["url"].startswith("https://127.0.0.1:") and status["healthy"]
    details = json.loads(ada_file.read_text())
    assert details["url"] == status["url"]
    assert details["tls_fingerprint"] == status["tls_fingerprint"]
    assert tls.fingerprint_of_pem(details["tls_certificate"]) == status["tls_fingerprint"]
    client = connect(connection_file=ada_file)
    assert [d.name for d in client.datasets.get_all()] == ["xray"]  # upload was a TLS stream
    # the token never travels in the clear: plain HTTP to the port gets no answer
    with pytest.raises(requests.RequestException):
        requests.get(status["url"].replace("https://", "http://") + "/health", timeout=5)


@pytest.mark.domain
def test_the_console_over_tls_sets_a_host_only_secure_cookie(tls_domain):
    import re

    url = json.loads(tls_domain.cli("status", "--json"))["url"]
    http = requests.Session()  # the pin of this process checks the certificate
    form = http.get(f"{url}/admin/login", timeout=30).text
    token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
    done = http.post(f"{url}/admin/login", headers={"Origin": url}, timeout=60,
                     allow_redirects=False,
                     data={"login_token": token, "email": tls_domain.state.load_config()
                           .admin_email, "password": tls_domain.state.admin_password()})
    assert done.status_code == 303, done.text[:300]
    cookie = done.headers["set-cookie"]
    port = url.rsplit(":", 1)[1]
    assert cookie.startswith(f"__Host-pneumosyft-console-session-{port}=")
    assert all(part in cookie for part in ("HttpOnly", "Secure", "Path=/", "SameSite=strict"))
    assert "Domain=" not in cookie
    page = http.get(f"{url}/admin/requests", timeout=60)
    assert page.status_code == 200 and "Requests" in page.text


@pytest.mark.domain
def test_a_server_with_another_certificate_is_refused_in_one_line(tls_domain, ada_file,
                                                                  tmp_path):
    from scientist import connect

    details = json.loads(ada_file.read_text())
    forged = dict(details, tls_fingerprint="AB" * 32)
    del forged["tls_certificate"]
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    # a second connection file naming the same domain with another certificate (a hospital
    # on the path handing out "its" file) cannot replace the pin this process holds
    with pytest.raises(DomainError, match="is already trusted by the pinned fingerprint"):
        connect(connection_file=tmp_path / "forged.json")
    assert tls.trusted(details["url"]).fingerprint == details["tls_fingerprint"]
    try:
        with pytest.raises(DomainError) as refused:  # the researcher's own explicit pin
            connect(details["url"], token=details["token"], email=details["email"],
                    password=details["password"], tls_fingerprint="AB" * 32)
        assert f"presented a TLS certificate with SHA-256 fingerprint " \
               f"{details['tls_fingerprint']}, not the pinned AB:AB:" in str(refused.value)
        assert "\n" not in str(refused.value)
        # the pin holds for every request of the process, not only for `connect`
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(details["url"] + "/health", timeout=5)
        # without a pin, this machine's CA bundle does not know a self-signed certificate
        tls.trust(details["url"], replace=True)
        with pytest.raises(DomainError, match="is not trusted by this machine's CA bundle"):
            connect(details["url"], token=details["token"], email=details["email"],
                    password=details["password"])
    finally:
        _pinned_again(details["url"], details["tls_fingerprint"])


@pytest.mark.domain
def test_a_connection_file_whose_certificate_is_not_its_pin_is_refused(ada_file, tmp_path):
    from scientist.connect import load_connection_file

    details = json.loads(ada_file.read_text())
    (tmp_path / "mixed.json").write_text(json.dumps(dict(details, tls_fingerprint="CD" * 32)))
    try:
        with pytest.raises(DomainError, match="not the one its tls_fingerprint names"):
            load_connection_file(tmp_path / "mixed.json")
    finally:
        _pinned_again(details["url"], details["tls_fingerprint"])


def _stock(connection_file, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, str(STOCK_RECIPE), str(connection_file)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)


@pytest.mark.domain
def test_a_stock_client_follows_the_readme_recipe_and_verifies_the_server(ada_file, tmp_path):
    done = _stock(ada_file)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "datasets: xray" in done.stdout
    # the recipe really verifies: with another certificate as its only CA, nothing is sent
    details = json.loads(ada_file.read_text())
    other = hospital_ca(tmp_path)[0].read_text()
    (tmp_path / "other.json").write_text(json.dumps(dict(details, tls_certificate=other)))
    refused = _stock(tmp_path / "other.json")
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr


@pytest.mark.domain
def test_a_restart_keeps_the_certificate_and_the_hospitals_own_ca_works(tls_domain, ada_file,
                                                                      tmp_path):
    from scientist import connect

    details = json.loads(ada_file.read_text())
    tls_domain.stop()
    started = tls_domain.run("start")
    assert f"TLS:   SHA-256 fingerprint {details['tls_fingerprint']}" in started.stdout
    # the hospital's IT issues a certificate from its own CA: the researcher names the CA
    ca = hospital_ca(tmp_path)
    cert, key = server_certificate(tmp_path, ca, "127.0.0.1")
    tls_domain.stop()
    tls_domain.run("start", "--tls-cert", str(cert), "--tls-key", str(key))
    renewed = tls_domain.researcher_file(RESEARCHER, tmp_path / "ada.json")
    assert json.loads(renewed.read_text())["tls_fingerprint"] == tls.fingerprint_of_pem(
        cert.read_text())
    client = connect(details["url"], token=details["token"], email=details["email"],
                     password=details["password"], ca_bundle=str(ca[0]))
    assert [d.name for d in client.datasets.get_all()] == ["xray"]
    assert tls.trusted(details["url"]).ca_bundle == str(ca[0])
