"""Federation cards (domain_setup/admin/federation_card.py): made from a state directory,
signed with the domain's identity key, verified before a member is added; and the
researcher's helpers taking the federation from the domains' own member lists."""

from __future__ import annotations

import json

import pytest

from common.errors import DomainError
from domain_setup.admin.federation_card import key_id, make_card, read_card
from domain_setup.aggregation_key import load_or_create_private_key
from domain_setup.state import DomainConfig, StateDir
from domain_setup.tls_certificate import checked_choice, ensure_certificate
from scientist.federated import Hospital, federation_problems


def _hospital_state(root, name="Royal Infirmary", *, tls=True, enable=True) -> StateDir:
    """A state directory as `start --tls-self-signed` and `federation enable` leave it."""
    state = StateDir(root)
    state.create_dirs()
    config = DomainConfig(name=name, host="10.0.0.2", port=8443)
    if tls:
        config.extra["tls"] = checked_choice(state, None, cert=None, key=None, self_signed=True)
        ensure_certificate(state, config)
    state.save_config(config)
    state.load_or_create_identity()
    if enable:
        load_or_create_private_key(state)
    return state


def _write(path, card) -> str:
    path.write_text(json.dumps(card))
    return str(path)


def test_a_card_round_trips_and_names_what_the_other_admin_needs(tmp_path):
    card = make_card(_hospital_state(tmp_path / "royal"))
    assert card["url"] == "https://10.0.0.2:8443" and card["name"] == "Royal Infirmary"
    assert len(card["tls_fingerprint"]) == 95 and card["aggregation_public_key"]
    assert read_card(_write(tmp_path / "card.json", card)) == card
    assert len(key_id(card)) == 24


@pytest.mark.parametrize("field, value", [
    ("url", "https://10.6.6.6:8443"), ("tls_fingerprint", "AB:" * 31 + "AB"),
    ("aggregation_public_key", None), ("name", "Royal Infirmary "), ("signing_key", "00" * 32)])
def test_a_card_altered_on_its_way_is_refused(tmp_path, field, value):
    state = _hospital_state(tmp_path / "royal")
    card = make_card(state)
    if field == "aggregation_public_key":  # another hospital's key in the card
        value = make_card(_hospital_state(tmp_path / "other", "Other"))[field]
    with pytest.raises(DomainError, match="signature does not verify"):
        read_card(_write(tmp_path / "card.json", dict(card, **{field: value})))


def test_cards_that_are_not_cards_are_refused_in_one_line(tmp_path):
    card = make_card(_hospital_state(tmp_path / "royal"))
    cases = {"not JSON": b"{", "version 1": b"[1, 2]", "larger than": b" " * 20000}
    for reason, raw in cases.items():
        (tmp_path / "bad.json").write_bytes(raw)
        with pytest.raises(DomainError, match=reason):
            read_card(tmp_path / "bad.json")
    with pytest.raises(DomainError, match="cannot read the card"):
        read_card(tmp_path / "missing.json")
    unsigned = {k: v for k, v in card.items() if k != "signature"}
    with pytest.raises(DomainError, match="signature does not verify"):
        read_card(_write(tmp_path / "c.json", unsigned))


def test_a_card_needs_tls_beyond_loopback_and_a_published_key(tmp_path):
    plain = _hospital_state(tmp_path / "plain", tls=False)
    with pytest.raises(DomainError, match="https:// with the TLS fingerprint"):
        make_card(plain)  # plain HTTP at 10.0.0.2
    assert make_card(plain, url="http://127.0.0.1:8081")["tls_fingerprint"] is None
    with pytest.raises(DomainError, match="federation enable"):
        make_card(_hospital_state(tmp_path / "new", enable=False))


def _hospital(name, key, url, members):
    return Hospital(name=name, client=None, public_key=key, url=url, members=members)


def test_the_researchers_round_follows_the_domains_member_lists(tmp_path):
    from common import tls

    a, b = "a" * 43 + "=", "b" * 43 + "="
    pin = "CD:" * 31 + "CD"
    tls.trust("https://10.9.0.2:8443", fingerprint=pin)
    try:
        royal = _hospital("Royal", a, "https://10.9.0.1:8443",
                          [{"name": "County", "public_key": b, "tls_fingerprint": pin}])
        county = _hospital("County", b, "https://10.9.0.2:8443", [])
        assert federation_problems([royal, county]) == [
            "County does not list Royal as a member of its federation (its admin adds their "
            "card: `federation members add CARD-FILE`)"]
        county.members = [{"name": "Royal", "public_key": a}]
        assert federation_problems([royal, county]) == []
        royal.members[0]["tls_fingerprint"] = "EF:" * 31 + "EF"  # Royal knows another County
        assert "Royal lists County with TLS certificate EF:EF" in \
            federation_problems([royal, county])[0]
    finally:
        tls.trust("https://10.9.0.2:8443", replace=True)


@pytest.mark.domain
def test_the_admin_adds_and_removes_a_member_by_card_audited(hospital, tmp_path):
    card = make_card(_hospital_state(tmp_path / "royal"))
    path = _write(tmp_path / "royal.card.json", card)
    added = hospital.cli("federation", "members", "add", path)
    assert f"key id {key_id(card)}" in added
    listed = hospital.cli("federation", "members", "list")
    assert "Royal Infirmary" in listed and "pinned" in listed and "signed" in listed
    tampered = _write(tmp_path / "t.json", dict(card, url="https://10.6.6.6:8443"))
    refused = hospital.attempt("federation", "members", "add", tampered)
    assert refused.returncode == 1 and "signature does not verify" in refused.stderr
    hospital.cli("federation", "members", "remove", "Royal Infirmary")
    assert "Royal Infirmary" not in hospital.cli("federation", "members", "list")
    audit = [json.loads(line) for line in hospital.cli(
        "audit", "--action", "federation.member.add", "--json").splitlines()]
    assert audit[-1]["target"] == "Royal Infirmary"
    assert audit[-1]["tls_fingerprint"] == card["tls_fingerprint"]


def _resigned(state, card: dict, **changes) -> dict:
    """`card` with `changes`, signed again with the hospital's own key: what a hospital that
    crafts its own card can hand over."""
    from nacl.signing import SigningKey

    from domain_setup.admin.federation_card import _message

    card = {k: v for k, v in card.items() if k != "signature"} | changes
    signing = SigningKey(bytes.fromhex(state.load_or_create_identity().signing_key))
    return dict(card, signature=signing.sign(_message(card)).signature.hex())


@pytest.mark.parametrize("changes, reason", [
    ({"url": "https://10.0.0.2:8443/\x1b[2J\x1b[31mFAKE\r\nroyal"}, "URL"),
    ({"url": "https://admin:pw@10.0.0.2:8443"}, "URL"),
    ({"name": "Royal\u202eyramirfnI"}, "printable"),
    ({"name": "Royal\x9b31m"}, "printable"),
    ({"name": "This Hospital"}, "this hospital"),
    ({"pneumosyft_federation_card": True}, "version"),
    ({"created": 20261207}, "fields are text"),
])
def test_a_signed_card_that_would_write_on_the_admins_terminal_is_refused(tmp_path, changes,
                                                                          reason):
    state = _hospital_state(tmp_path / "royal")
    card = _resigned(state, make_card(state), **changes)
    with pytest.raises(DomainError, match=reason):
        read_card(_write(tmp_path / "card.json", card))


def test_a_card_with_a_field_twice_is_refused(tmp_path):
    card = make_card(_hospital_state(tmp_path / "royal"))
    text = json.dumps(card)
    doubled = text[:-1] + ', "url": "https://10.6.6.6:8443"}'
    (tmp_path / "card.json").write_text(doubled)
    with pytest.raises(DomainError, match="'url' is there twice"):
        read_card(tmp_path / "card.json")


def test_the_self_signed_certificate_vouches_for_its_own_names_only(tmp_path):
    from cryptography import x509

    _hospital_state(tmp_path / "royal")
    certificate = x509.load_pem_x509_certificate(
        (tmp_path / "royal" / "tls" / "cert.pem").read_bytes())
    constraints = certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = {str(n.value) for n in constraints.value.permitted_subtrees}
    assert "10.0.0.2/32" in permitted and "localhost" in permitted
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert len(permitted) == len(list(names))  # one constraint per name, nothing wider
