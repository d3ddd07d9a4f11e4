"""JWT interoperability: tokens minted by PyJWT verify in mcpgw, and tokens from `mcpgw issue-token` verify in PyJWT."""
import json
import time

import jwt
import pytest
from jwt.algorithms import RSAAlgorithm

from conftest import ROOT, dev_file

ISSUER = "https://issuer.mcpgw.dev/{}"


def claims(tenant="acme", agent="bot1", **overrides):
    now = int(time.time())
    body = {"iss": ISSUER.format(tenant), "sub": agent, "aud": "mcpgw", "tenant": tenant, "iat": now, "exp": now + 600}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def rs256(payload, tenant="acme", kid=None):
    return jwt.encode(payload, dev_file(f"jwt/{tenant}-rs256.key"), algorithm="RS256", headers={"kid": kid or f"{tenant}-rs256"})


def hs256(payload, tenant="acme"):
    return jwt.encode(payload, dev_file(f"jwt/{tenant}-hs256.secret"), algorithm="HS256", headers={"kid": f"{tenant}-hs256"})


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_pyjwt_rs256_and_hs256_tokens_verify(verify, tenant):
    for token in (rs256(claims(tenant), tenant), hs256(claims(tenant, scope="tools:read tools:write"), tenant)):
        accepted, answer = verify(token)
        assert accepted, answer
        assert answer["tenant"] == tenant and answer["agent"] == "bot1"


def test_pyjwt_scopes_as_scp_array(verify):
    accepted, answer = verify(rs256(claims(scp=["tools:read", "admin"])))
    assert accepted and answer["scopes"] == ["admin", "tools:read"]


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda: rs256(claims(exp=int(time.time()) - 3600)), "token_expired"),
        (lambda: rs256(claims(nbf=int(time.time()) + 3600)), "token_not_yet_valid"),
        (lambda: rs256(claims(aud="someone-else")), "wrong_audience"),
        (lambda: rs256(claims(iss="https://evil.example")), "wrong_issuer"),
        (lambda: rs256(claims(tenant="globex", iss=ISSUER.format("acme"))), "tenant_mismatch"),
        (lambda: rs256({k: v for k, v in claims().items() if k != "tenant"}), "missing_claim"),
        (lambda: rs256(claims(), kid="unknown"), "unknown_kid"),
        (lambda: jwt.encode(claims(), None, algorithm="none"), "malformed_token"),
        # PyJWT refuses to use a PEM public key as an HMAC secret, so the confused token is signed by hand.
        (lambda: confused_token(), "algorithm_mismatch"),
        (lambda: rs256(claims(), tenant="globex", kid="acme-rs256"), "bad_signature"),
    ],
)
def test_pyjwt_tokens_that_must_be_refused(verify, make, code):
    accepted, answer = verify(make())
    assert not accepted
    assert answer["code"] == code, answer


def confused_token():
    import base64, hashlib, hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "kid": "acme-rs256"}).encode()) + "." + b64(json.dumps(claims()).encode())
    signature = hmac.new(dev_file("jwt/acme-rs256.pub"), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


@pytest.mark.parametrize("alg, verification_key", [("RS256", "jwt/acme-rs256.pub"), ("HS256", "jwt/acme-hs256.secret")])
def test_issue_token_verifies_with_pyjwt(mcpgw, alg, verification_key):
    status, token = mcpgw("issue-token", "--tenant", "acme", "--agent", "bot2", "--alg", alg, "--scope", "tools:read", "--ttl", "15m")
    assert status == 0
    decoded = jwt.decode(
        token.strip(), dev_file(verification_key), algorithms=[alg], audience="mcpgw", issuer=ISSUER.format("acme")
    )
    assert decoded["tenant"] == "acme" and decoded["sub"] == "bot2" and decoded["scope"] == "tools:read"
    assert 14 * 60 <= decoded["exp"] - decoded["iat"] <= 15 * 60
    header = jwt.get_unverified_header(token.strip())
    assert header["kid"] == f"acme-{alg.lower()}" and header["alg"] == alg


def dev_config_with_absolute_paths() -> dict:
    """mcpgw.dev.json with every file path made absolute, to be written elsewhere and edited."""
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    for tenant in config["tenants"].values():
        tenant["client_ca"] = [str(ROOT / p) for p in tenant["client_ca"]]
        tenant["crl"] = [str(ROOT / p) for p in tenant["crl"]]
        for key in tenant["jwt"]["keys"]:
            key[next(k for k in key if k.endswith("_file"))] = str(ROOT / key[next(k for k in key if k.endswith("_file"))])
    config["tls"] = {k: str(ROOT / v) if k in ("certificate_chain", "private_key") else v for k, v in config["tls"].items()}
    return config


def test_typed_access_tokens(verify, mcpgw, tmp_path):
    """A tenant with token_types ["at+jwt"] (RFC 9068) takes PyJWT's typed tokens and issue-token --typ at+jwt, and
    refuses PyJWT's default typ (JWT), an untyped token and an ID token signed by its own key."""
    config = dev_config_with_absolute_paths()
    config["tenants"]["acme"]["jwt"]["token_types"] = ["at+jwt"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    check = lambda token: verify(token, config=str(path))
    key = dev_file("jwt/acme-rs256.key")
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT"):
        accepted, answer = check(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "acme-rs256", "typ": typ}))
        assert accepted, (typ, answer)
    status, minted = mcpgw("issue-token", "--tenant", "acme", "--agent", "bot1", "--typ", "at+jwt")
    assert status == 0 and jwt.get_unverified_header(minted.strip())["typ"] == "at+jwt"
    assert check(minted.strip())[0]
    untyped = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "acme-rs256", "typ": None})
    assert "typ" not in jwt.get_unverified_header(untyped)
    for token in (rs256(claims()), untyped, rs256(claims(nonce="n-0S6_WzA2Mj", auth_time=int(time.time())))):
        accepted, answer = check(token)
        assert not accepted and answer["code"] == "wrong_token_type", answer
    # The other tenant names no types: its PyJWT tokens (typ JWT) still verify.
    assert check(rs256(claims("globex"), "globex"))[0]
    status, out = mcpgw("issue-token", "--tenant", "acme", "--agent", "bot1", "--typ", "at jwt")
    assert status != 0 and not out.strip()


def test_jwks_file_from_pyjwt(verify, tmp_path):
    """A JWK Set written by PyJWT configures a tenant; its tokens verify and the old PEM keys are not needed."""
    public_pem = dev_file("jwt/acme-rs256.pub")
    jwk = json.loads(RSAAlgorithm.to_jwk(RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(public_pem)))
    jwk.update({"kid": "rotated-1", "alg": "RS256", "use": "sig"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = dev_config_with_absolute_paths()
    config["tenants"]["acme"]["jwt"] = {"issuers": [ISSUER.format("acme")], "jwks_file": str(tmp_path / "jwks.json")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    accepted, answer = verify(rs256(claims(), kid="rotated-1"), config=str(tmp_path / "config.json"))
    assert accepted and answer["kid"] == "rotated-1", answer
    accepted, answer = verify(rs256(claims()), config=str(tmp_path / "config.json"))
    assert not accepted and answer["code"] == "unknown_kid"


def test_decode_prints_header_and_claims(mcpgw):
    token = rs256(claims(agent="decoder"))
    status, out = mcpgw("issue-token", "--decode", token)
    assert status == 0
    decoded = json.loads(out)
    assert decoded["verified"] is False
    assert decoded["header"]["kid"] == "acme-rs256" and decoded["claims"]["sub"] == "decoder"
