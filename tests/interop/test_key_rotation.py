"""SIGHUP without a restart: a rotated JWKS is picked up (a broken one is refused and the previous keys stay in
force), and a moved (rotated) audit log file is reopened by its path."""
import json
import signal
import subprocess
import time

import jwt
from jwt.algorithms import RSAAlgorithm

from conftest import ROOT, dev_file
from test_serve_cli import start


def jwk(kid):
    key = json.loads(RSAAlgorithm.to_jwk(RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(dev_file("jwt/acme-rs256.pub"))))
    key.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return key


def token(kid):
    now = int(time.time())
    claims = {"iss": "https://issuer.mcpgw.dev/acme", "sub": "bot1", "aud": "mcpgw", "tenant": "acme", "iat": now, "exp": now + 600}
    return jwt.encode(claims, dev_file("jwt/acme-rs256.key"), algorithm="RS256", headers={"kid": kid})


def status(port, kid):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", "certs-dev/gateway-ca.pem", "-o", "/dev/null", "-w", "%{http_code}",
         "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {token(kid)}", f"https://localhost:{port}/mcp",
         "-d", '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{}}}'],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    return int(result.stdout)


def test_sighup_picks_up_a_rotated_jwks_and_reopens_the_audit_log(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk("2026-old")]}))
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["policies"] = str(ROOT / "policies")
    config["audit_log"] = str(tmp_path / "audit.log")
    config["tls"] = {**config["tls"], "certificate_chain": str(ROOT / "certs-dev/server.pem"), "private_key": str(ROOT / "certs-dev/server.key")}
    for tenant in config["tenants"].values():
        tenant["client_ca"] = [str(ROOT / p) for p in tenant["client_ca"]]
        tenant["crl"] = [str(ROOT / p) for p in tenant["crl"]]
        for key in tenant["jwt"]["keys"]:
            field = next(k for k in key if k.endswith("_file"))
            key[field] = str(ROOT / key[field])
    config["tenants"]["acme"]["jwt"] = {"issuers": ["https://issuer.mcpgw.dev/acme"], "jwks_file": str(jwks)}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process, port, _ = start("--config", str(path), "--listen", "127.0.0.1:0")
    try:
        # delete_file is denied by policy (200 + JSON-RPC error) once authenticated; an unknown kid gets 401.
        assert status(port, "2026-old") == 200
        assert status(port, "2026-new") == 401
        jwks.write_text(json.dumps({"keys": [jwk("2026-old"), jwk("2026-new")]}))
        # logrotate-style: move the audit file away; SIGHUP makes the gateway reopen it by its path.
        (tmp_path / "audit.log").rename(tmp_path / "audit.log.1")
        process.send_signal(signal.SIGHUP)
        for _ in range(50):
            if status(port, "2026-new") == 200:
                break
            time.sleep(0.1)
        assert status(port, "2026-new") == 200
        # A broken JWKS is refused on reload: the keys in force stay.
        jwks.write_text("{not json")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert status(port, "2026-new") == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "identity settings reloaded" in stderr
    assert "identity reload refused" in stderr
    old = [json.loads(line) for line in (tmp_path / "audit.log.1").read_text().splitlines()]
    new = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    decisions = [r["decision"] for r in old]
    assert decisions[:2] == ["deny", "authentication_failed"]
    # A poll served before the reload took effect was refused, and recorded in the old file (which the same reload
    # reopens): a loaded CI machine made one.
    assert all(decision == "authentication_failed" for decision in decisions[2:]), decisions
    assert new and all(r["decision"] in ("deny", "authentication_failed") for r in new)
