"""JWT issuing, verification and revocation, with real keys and real PyJWT: each
attack gets its own test and the exact reason the gate would answer with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import time
import uuid
from pathlib import Path

import jwt
import pytest

from common.errors import PneumoSyftError, TokenError
from common.secure_files import read_secret, write_secret
from domain_setup.server.tokens import MAX_TTL_SECONDS, TokenAuthority, bearer_token, parse_ttl

ISSUER = "St Mary Hospital"
AUDIENCE = "5f0c8a3e2b7d4c1a9e6f3b2a1c0d9e8f"
ADA = "ada@pneumosyft-research.org"
REQUIRED = ("iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti")


# -- helpers ---------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64url(json.dumps(obj).encode())


def payload_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def private_pem(authority: TokenAuthority) -> bytes:
    return (authority.state_dir / "keys" / "jwt_private.pem").read_bytes()


def public_pem(authority: TokenAuthority) -> bytes:
    return (authority.state_dir / "keys" / "jwt_public.pem").read_bytes()


def sign_with_domain_key(authority: TokenAuthority, claims: dict) -> str:
    """A token signed with the domain's own key, with whatever claims a test needs."""
    return jwt.encode(claims, private_pem(authority), algorithm=authority.algorithm)


def valid_claims(authority: TokenAuthority, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": authority.issuer, "aud": authority.audience, "sub": ADA,
              "role": "data_scientist", "iat": now, "nbf": now, "exp": now + 3600,
              "jti": uuid.uuid4().hex}
    claims.update(changes)
    return claims


def reason(authority: TokenAuthority, token: str | None) -> str:
    with pytest.raises(TokenError) as info:
        authority.verify(token)
    return str(info.value)


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    """A fresh EdDSA domain (the default algorithm)."""
    return TokenAuthority.create(tmp_path / "domain", ISSUER, AUDIENCE)


@pytest.fixture
def other_domain(tmp_path: Path) -> TokenAuthority:
    """A second domain with its own key but the same issuer and audience strings."""
    return TokenAuthority.create(tmp_path / "other", ISSUER, AUDIENCE)


@pytest.fixture(scope="module")
def rs256(tmp_path_factory) -> TokenAuthority:
    """An RS256 domain (RSA 3072 key generation is slow, so one per module)."""
    return TokenAuthority.create(tmp_path_factory.mktemp("rs256"), ISSUER, AUDIENCE, "RS256")


@pytest.fixture
def hs256(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority.create(tmp_path / "hs256", ISSUER, AUDIENCE, "HS256")


# -- valid tokens ------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256", "HS256"])
def test_round_trip(tmp_path: Path, algorithm: str) -> None:
    authority = TokenAuthority.create(tmp_path, ISSUER, AUDIENCE, algorithm)
    token, claims = authority.issue(ADA, "data_owner", ttl_seconds=600)
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    verified = authority.verify(token)
    assert verified == claims
    assert set(verified) == set(REQUIRED)
    assert (verified["iss"], verified["aud"], verified["sub"], verified["role"]) == \
        (ISSUER, AUDIENCE, ADA, "data_owner")
    assert verified["exp"] - verified["iat"] == 600 and verified["nbf"] == verified["iat"]
    assert len(verified["jti"]) == 32 and int(verified["jti"], 16) >= 0
    # a restarted process verifies the same token
    assert TokenAuthority.load(tmp_path).verify(token) == claims
    listed = authority.list_tokens()
    assert [(r["jti"], r["sub"], r["role"], r["revoked"]) for r in listed] == \
        [(claims["jti"], ADA, "data_owner", False)]


def test_load_or_create_keeps_the_key(tmp_path: Path) -> None:
    first = TokenAuthority.load_or_create(tmp_path, ISSUER, AUDIENCE)
    token, _ = first.issue(ADA, "admin")
    again = TokenAuthority.load_or_create(tmp_path, ISSUER, AUDIENCE)
    assert again.verify(token)["role"] == "admin"


def test_load_or_create_refuses_another_identity(tmp_path: Path) -> None:
    TokenAuthority.create(tmp_path, ISSUER, AUDIENCE)
    with pytest.raises(TokenError, match="was made for issuer"):
        TokenAuthority.load_or_create(tmp_path, ISSUER, "another-server-id")
    with pytest.raises(TokenError, match="was made for issuer"):
        TokenAuthority.load_or_create(tmp_path, ISSUER, AUDIENCE, "RS256")


def test_create_refuses_to_replace_a_key(authority: TokenAuthority) -> None:
    with pytest.raises(TokenError, match="already holds a JWT signing key"):
        TokenAuthority.create(authority.state_dir, ISSUER, AUDIENCE)


def test_load_without_keys(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="no JWT signing key"):
        TokenAuthority.load(tmp_path)


def test_issue_refuses_unknown_role_and_bad_ttl(authority: TokenAuthority) -> None:
    with pytest.raises(TokenError, match="unknown role 'root'"):
        authority.issue(ADA, "root")
    with pytest.raises(TokenError, match="ttl must be"):
        authority.issue(ADA, "admin", ttl_seconds=MAX_TTL_SECONDS + 1)
    with pytest.raises(TokenError, match="ttl must be"):
        authority.issue(ADA, "admin", ttl_seconds=0)
    assert authority.list_tokens() == []


# -- missing and malformed ---------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "", "   "])
def test_missing_token(authority: TokenAuthority, token: str | None) -> None:
    assert reason(authority, token) == "missing token"


def test_malformed_garbage(authority: TokenAuthority) -> None:
    assert reason(authority, "this is not a token") == "malformed token"


def test_malformed_two_parts(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    assert reason(authority, token.rsplit(".", 1)[0]) == "malformed token"


def test_malformed_four_parts(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    assert reason(authority, token + ".AAAA") == "malformed token"


def test_malformed_bad_base64(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    header, payload, signature = token.split(".")
    assert reason(authority, f"{header}.{payload[:-1]}!.{signature}") == "malformed token"
    assert reason(authority, f"{header}.{payload}AB.{signature}") == "malformed token"


def test_malformed_header_not_json(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    _, payload, signature = token.split(".")
    assert reason(authority, f"{b64url(b'not json')}.{payload}.{signature}") == "malformed token"
    assert reason(authority, f"{b64url(b'[1]')}.{payload}.{signature}") == "malformed token"


def test_malformed_trailing_newline(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    assert reason(authority, token + "\n") == "malformed token"


def test_malformed_huge_token(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    header, payload, signature = token.split(".")
    assert reason(authority, f"{header}.{payload}{'A' * 10_000}.{signature}") == "malformed token"


# -- algorithm attacks -------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(authority: TokenAuthority, alg: str) -> None:
    genuine, _ = authority.issue(ADA, "data_scientist")
    claims = dict(payload_of(genuine), role="admin")  # a registered jti, escalated role
    forged = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}."
    assert reason(authority, forged) == "algorithm not allowed"


def test_missing_alg_header(authority: TokenAuthority) -> None:
    genuine, _ = authority.issue(ADA, "data_scientist")
    _, payload, signature = genuine.split(".")
    assert reason(authority, f"{b64json({'typ': 'JWT'})}.{payload}.{signature}") == \
        "algorithm not allowed"


def _hs256_signed_with(secret: bytes, claims: dict) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_key_confusion_hs256_with_eddsa_public_key(authority: TokenAuthority) -> None:
    genuine, _ = authority.issue(ADA, "data_scientist")
    forged = _hs256_signed_with(public_pem(authority), dict(payload_of(genuine), role="admin"))
    assert reason(authority, forged) == "algorithm not allowed"


def test_key_confusion_hs256_with_rs256_public_key(rs256: TokenAuthority) -> None:
    genuine, _ = rs256.issue(ADA, "data_scientist")
    forged = _hs256_signed_with(public_pem(rs256), dict(payload_of(genuine), role="admin"))
    assert reason(rs256, forged) == "algorithm not allowed"


def test_asymmetric_token_presented_to_hs256_domain(hs256: TokenAuthority,
                                                    authority: TokenAuthority) -> None:
    eddsa_token, _ = authority.issue(ADA, "admin")
    assert reason(hs256, eddsa_token) == "algorithm not allowed"


def test_rs256_token_presented_to_eddsa_domain(authority: TokenAuthority,
                                               rs256: TokenAuthority) -> None:
    rs_token, _ = rs256.issue(ADA, "admin")
    assert reason(authority, rs_token) == "algorithm not allowed"


# -- signature attacks -------------------------------------------------------------------
def test_rs256_token_from_another_key(rs256: TokenAuthority, tmp_path: Path) -> None:
    intruder = TokenAuthority.create(tmp_path / "intruder", ISSUER, AUDIENCE, "RS256")
    token, _ = intruder.issue(ADA, "admin")
    assert reason(rs256, token) == "bad signature"


def test_eddsa_token_from_another_domain(authority: TokenAuthority,
                                         other_domain: TokenAuthority) -> None:
    token, _ = other_domain.issue(ADA, "admin")
    assert reason(authority, token) == "bad signature"


def test_hs256_token_from_another_secret(hs256: TokenAuthority, tmp_path: Path) -> None:
    intruder = TokenAuthority.create(tmp_path / "intruder", ISSUER, AUDIENCE, "HS256")
    token, _ = intruder.issue(ADA, "admin")
    assert reason(hs256, token) == "bad signature"


def test_another_domain_token_with_a_registered_jti(authority: TokenAuthority,
                                                    other_domain: TokenAuthority) -> None:
    """Same jti format and even the same jti as a genuine token: the signature decides."""
    genuine, _ = authority.issue(ADA, "data_scientist")
    claims = dict(payload_of(genuine), role="admin")
    forged = jwt.encode(claims, private_pem(other_domain), algorithm="EdDSA")
    assert reason(authority, forged) == "bad signature"


def test_tampered_payload_role_admin(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    header, _, signature = token.split(".")
    tampered = f"{header}.{b64json(dict(payload_of(token), role='admin'))}.{signature}"
    assert reason(authority, tampered) == "bad signature"


def test_tampered_signature(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist")
    header, payload, signature = token.split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert reason(authority, f"{header}.{payload}.{flipped}") == "bad signature"
    assert reason(authority, f"{header}.{payload}.") == "bad signature"


# -- claims ------------------------------------------------------------------------------
def test_expired(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist", ttl_seconds=60, now=time.time() - 120)
    assert reason(authority, token) == "token expired"


def test_expired_at_exactly_exp(authority: TokenAuthority) -> None:
    token, claims = authority.issue(ADA, "data_scientist", ttl_seconds=60)
    assert authority.verify(token, now=claims["exp"] - 1)["jti"] == claims["jti"]
    with pytest.raises(TokenError, match="^token expired$"):
        authority.verify(token, now=claims["exp"])


def test_nbf_in_future(authority: TokenAuthority) -> None:
    token, _ = authority.issue(ADA, "data_scientist", now=time.time() + 3600)
    assert reason(authority, token) == "token not yet valid"


def test_nbf_within_leeway_is_accepted(authority: TokenAuthority) -> None:
    token, claims = authority.issue(ADA, "data_scientist", now=time.time() + 20)
    assert authority.verify(token)["jti"] == claims["jti"]


def test_iat_in_future(authority: TokenAuthority) -> None:
    now = int(time.time())
    token = sign_with_domain_key(authority, valid_claims(authority, iat=now + 3600))
    assert reason(authority, token) == "token not yet valid"


def test_non_integer_times(authority: TokenAuthority) -> None:
    token = sign_with_domain_key(authority, valid_claims(authority, exp="tomorrow"))
    assert reason(authority, token) == "malformed token"


def test_wrong_issuer(authority: TokenAuthority) -> None:
    token = sign_with_domain_key(authority, valid_claims(authority, iss="Other Hospital"))
    assert reason(authority, token) == "wrong issuer"


def test_wrong_audience(authority: TokenAuthority) -> None:
    token = sign_with_domain_key(authority, valid_claims(authority, aud="another-server-id"))
    assert reason(authority, token) == "wrong audience"


def test_audience_list_is_refused(authority: TokenAuthority) -> None:
    token = sign_with_domain_key(authority, valid_claims(authority, aud=[AUDIENCE, "x"]))
    assert reason(authority, token) == "wrong audience"


@pytest.mark.parametrize("claim", REQUIRED)
def test_missing_claim(authority: TokenAuthority, claim: str) -> None:
    claims = valid_claims(authority)
    del claims[claim]
    assert reason(authority, sign_with_domain_key(authority, claims)) == f"missing claim {claim}"


def test_unknown_role(authority: TokenAuthority) -> None:
    genuine, _ = authority.issue(ADA, "data_scientist")
    claims = dict(payload_of(genuine), role="superuser")
    assert reason(authority, sign_with_domain_key(authority, claims)) == "unknown role"


def test_not_issued_by_this_domain(authority: TokenAuthority) -> None:
    """Signed with the domain's key (e.g. a leaked key backup) but never issued."""
    token = sign_with_domain_key(authority, valid_claims(authority))
    assert reason(authority, token) == "unknown token"


def test_registered_jti_with_another_role(authority: TokenAuthority) -> None:
    genuine, _ = authority.issue(ADA, "data_scientist")
    claims = dict(payload_of(genuine), role="admin")
    assert reason(authority, sign_with_domain_key(authority, claims)) == "unknown token"


def test_clone_with_the_same_key_but_its_own_registry(authority: TokenAuthority,
                                                      tmp_path: Path) -> None:
    """A copy of the key that issues on its own: its tokens are not in our registry."""
    clone_dir = tmp_path / "clone"
    shutil.copytree(authority.state_dir / "keys", clone_dir / "keys")
    clone_token, _ = TokenAuthority.load(clone_dir).issue(ADA, "admin")
    assert reason(authority, clone_token) == "unknown token"


# -- revocation --------------------------------------------------------------------------
def test_revoked(authority: TokenAuthority) -> None:
    token, claims = authority.issue(ADA, "data_scientist")
    record = authority.revoke(claims["jti"], reason="laptop stolen")
    assert record["revoked"] is True and record["reason"] == "laptop stolen"
    assert record["revoked_at"] >= claims["iat"]
    assert reason(authority, token) == "token revoked"
    [listed] = authority.list_tokens()
    assert listed["revoked"] is True and listed["reason"] == "laptop stolen"


def test_revoked_survives_restart(authority: TokenAuthority) -> None:
    token, claims = authority.issue(ADA, "data_scientist")
    authority.revoke(claims["jti"], reason="left the project")
    state_dir = authority.state_dir
    del authority
    reloaded = TokenAuthority.load(state_dir)
    assert reason(reloaded, token) == "token revoked"
    [listed] = reloaded.list_tokens()
    assert listed["revoked"] is True and listed["reason"] == "left the project"


def test_revocation_by_another_process_is_seen(authority: TokenAuthority) -> None:
    """The server's authority sees a revocation written by a CLI's authority."""
    token, claims = authority.issue(ADA, "data_scientist")
    assert authority.verify(token)["jti"] == claims["jti"]  # registry now cached
    TokenAuthority.load(authority.state_dir).revoke(claims["jti"], reason="by cli")
    assert reason(authority, token) == "token revoked"


def test_issues_from_two_instances_are_both_kept(authority: TokenAuthority) -> None:
    cli = TokenAuthority.load(authority.state_dir)
    token_a, _ = authority.issue(ADA, "data_scientist")
    token_b, _ = cli.issue(ADA, "data_owner")
    token_c, _ = authority.issue(ADA, "admin")
    for token in (token_a, token_b, token_c):
        assert authority.verify(token) and cli.verify(token)
    assert len(authority.list_tokens()) == 3


def test_revoke_twice_keeps_the_first_revocation(authority: TokenAuthority) -> None:
    _, claims = authority.issue(ADA, "data_scientist")
    first = authority.revoke(claims["jti"], reason="first")
    assert authority.revoke(claims["jti"], reason="second") == first


def test_revoke_unknown_jti(authority: TokenAuthority) -> None:
    jti = uuid.uuid4().hex
    with pytest.raises(TokenError, match=f"^unknown token id {jti}$"):
        authority.revoke(jti)


@pytest.mark.parametrize("jti", ["", "abc", "A" * 32, "g" * 32, "0" * 33, "../../etc/passwd",
                                 "0" * 32 + "\n", " " + "0" * 32, None])
def test_revoke_refuses_malformed_jti(authority: TokenAuthority, jti) -> None:
    with pytest.raises(TokenError, match="^invalid token id .*: expected 32 lowercase hex"):
        authority.revoke(jti)


# -- key storage -------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("algorithm,secret_file", [("EdDSA", "jwt_private.pem"),
                                                   ("HS256", "jwt_hs256.secret")])
def test_keys_are_private(tmp_path: Path, algorithm: str, secret_file: str) -> None:
    authority = TokenAuthority.create(tmp_path, ISSUER, AUDIENCE, algorithm)
    authority.issue(ADA, "admin")
    assert _mode(tmp_path / "keys" / secret_file) == 0o600
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "tokens.json") == 0o600
    assert json.loads((tmp_path / "keys" / "jwt.json").read_text()) == \
        {"algorithm": algorithm, "issuer": ISSUER, "audience": AUDIENCE}


def test_rs256_private_key_is_private_and_3072_bits(rs256: TokenAuthority) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert _mode(rs256.state_dir / "keys" / "jwt_private.pem") == 0o600
    assert load_pem_private_key(private_pem(rs256), password=None).key_size == 3072


@pytest.mark.parametrize("algorithm,secret_file", [("EdDSA", "jwt_private.pem"),
                                                   ("HS256", "jwt_hs256.secret")])
def test_secrets_never_in_registry(tmp_path: Path, algorithm: str, secret_file: str) -> None:
    authority = TokenAuthority.create(tmp_path, ISSUER, AUDIENCE, algorithm)
    token, _ = authority.issue(ADA, "admin")
    registry = (tmp_path / "tokens.json").read_text()
    secret = (tmp_path / "keys" / secret_file).read_text()
    body = "".join(line for line in secret.splitlines() if "-----" not in line)
    assert body and body not in registry
    assert token not in registry and token.split(".")[2] not in registry


def test_load_refuses_a_world_readable_private_key(authority: TokenAuthority) -> None:
    key = authority.state_dir / "keys" / "jwt_private.pem"
    os.chmod(key, 0o644)
    with pytest.raises(TokenError, match=r"readable by others \(mode 0644\); chmod 600 it"):
        TokenAuthority.load(authority.state_dir)


def test_load_refuses_a_swapped_public_key(authority: TokenAuthority,
                                           other_domain: TokenAuthority) -> None:
    (authority.state_dir / "keys" / "jwt_public.pem").write_bytes(public_pem(other_domain))
    with pytest.raises(TokenError, match="does not match the private key"):
        TokenAuthority.load(authority.state_dir)


def test_write_secret_is_atomic_and_private(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    old_umask = os.umask(0)
    try:
        write_secret(target, "first")
        write_secret(target, b"second")
    finally:
        os.umask(old_umask)
    assert _mode(target) == 0o600 and read_secret(target) == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary left behind


def test_read_secret_refuses_group_readable(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    write_secret(target, "x")
    os.chmod(target, 0o640)
    with pytest.raises(PneumoSyftError, match=r"^.*secret is readable by others \(mode 0640\)"):
        read_secret(target)


# -- parsers -----------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("8h", 28800), ("30m", 1800), ("2d", 172800),
                                          ("3600s", 3600), ("90", 90), (" 1H ", 3600),
                                          ("30d", MAX_TTL_SECONDS), (45, 45)])
def test_parse_ttl(text, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "8x", "-5m", "1.5h", "8 hours", "0", "0s",
                                  "31d", "721h", "99999999999999999999"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(TokenError, match="^(invalid ttl|ttl .* too long)"):
        parse_ttl(text)


def test_parse_ttl_too_long_message() -> None:
    with pytest.raises(TokenError, match=r"^ttl 31d is too long: at most 30d$"):
        parse_ttl("31d")


@pytest.mark.parametrize("header", ["Bearer abc.def.ghi", "bearer abc.def.ghi",
                                    "BEARER   abc.def.ghi  "])
def test_bearer_token(header: str) -> None:
    assert bearer_token(header) == "abc.def.ghi"


NOT_BEARER = "authorization scheme must be Bearer"


@pytest.mark.parametrize("header,message", [(None, "missing token"), ("", "missing token"),
                                            ("Bearer", "missing token"),
                                            ("Bearer   ", "missing token"),
                                            ("Basic dXNlcjpwYXNz", NOT_BEARER),
                                            ("Token abc.def.ghi", NOT_BEARER)])
def test_bearer_token_refuses(header, message: str) -> None:
    with pytest.raises(TokenError, match=f"^{message}$"):
        bearer_token(header)


def test_a_revocation_from_inside_an_update_is_queued_not_a_deadlock(authority):
    """A garbage-collected admin session revokes its token from a finalizer, which can run
    in the middle of another registry write on the same thread (seen in a test run: the
    CLI hung for ever on the registry's flock). Here the finalizer is called by hand."""
    import threading

    _, session = authority.issue("admin@example.org", "admin", ttl_seconds=60)
    _, other = authority.issue("ada@example.org", "data_scientist", ttl_seconds=60)

    def finalizer_mid_write(tokens: dict) -> None:
        assert TokenAuthority.load(authority.state_dir).revoke(session["jti"]) is None
        tokens[other["jti"]]["reason"] = "outer change"

    worker = threading.Thread(target=authority._registry.update, args=(finalizer_mid_write,),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the nested update waited for the flock its thread holds"
    records = {r["jti"]: r for r in TokenAuthority.load(authority.state_dir).list_tokens()}
    assert records[session["jti"]]["revoked"] and not records[other["jti"]]["revoked"]
    assert records[other["jti"]]["reason"] == "outer change"  # both changes saved
    # and a revocation queued for a token already revoked is dropped without harm
    authority._registry.update(lambda tokens: TokenAuthority.load(
        authority.state_dir).revoke(session["jti"]))


def test_a_revocation_queued_during_a_failing_update_is_still_saved(authority):
    _, session = authority.issue("admin@example.org", "admin", ttl_seconds=60)

    def fails_after_a_finalizer_ran(tokens: dict) -> None:
        TokenAuthority.load(authority.state_dir).revoke(session["jti"])
        raise TokenError("unknown token id x")

    with pytest.raises(TokenError, match="unknown token id x"):
        authority._registry.update(fails_after_a_finalizer_ran)
    assert TokenAuthority.load(authority.state_dir).list_tokens()[0]["revoked"]
