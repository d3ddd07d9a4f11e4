"""A certificate revoked after its TLS session was issued never resumes into a principal: tickets survive a TLS
reload (the ticket keys are the process's), so the resumption happens, and the gateway's fresh verification of the
leaf against the reloaded CRL refuses it."""
import datetime
import json
import shutil
import signal
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import ROOT
from test_serve_cli import start
from test_tls_resumption import EchoUpstream

DEV = ROOT / "certs-dev"


def _s_client(port, mode, agent, session, resume):
    import subprocess
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    request = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Accept: application/json, text/event-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    base = DEV / "acme" / "agents" / agent
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-CAfile", str(DEV / "gateway-ca.pem"), "-cert", f"{base}.pem", "-key", f"{base}.key",
               "-ign_eof", *mode, "-sess_in" if resume else "-sess_out", str(session)]
    return subprocess.run(command, input=request, capture_output=True, text=True, timeout=30).stdout


def revoke(crl_path, agent):
    ca = x509.load_pem_x509_certificate((DEV / "acme" / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((DEV / "acme" / "ca.key").read_bytes(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.subject) \
        .last_update(now - datetime.timedelta(minutes=1)).next_update(now + datetime.timedelta(days=1))
    for name in (agent, "revoked"):
        serial = x509.load_pem_x509_certificate((DEV / "acme" / "agents" / f"{name}.pem").read_bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - datetime.timedelta(minutes=1)).build())
    crl = builder.sign(key, hashes.SHA256())
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def wait_for(lines: list, text: str, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(text in line for line in lines):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("mode", [["-tls1_3"], ["-tls1_2"]], ids=["TLS 1.3 tickets", "TLS 1.2 tickets"])
def test_a_certificate_revoked_between_two_connections_is_refused_on_the_resumed_one(tmp_path, mode):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    shutil.copy(DEV / "acme" / "ca.crl.pem", tmp_path / "acme.crl.pem")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text().replace('"certs-dev/', f'"{DEV}/'))
    config["tenants"]["acme"]["crl"] = [str(tmp_path / "acme.crl.pem")]
    config["policies"] = str(ROOT / "policies")
    (tmp_path / "config.json").write_text(json.dumps(config))
    process, port, _ = start("--config", str(tmp_path / "config.json"), "--listen", "127.0.0.1:0", "--audit-log", "/dev/null",
                             "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp")
    log: list = []
    threading.Thread(target=lambda: log.extend(iter(process.stderr.readline, "")), daemon=True).start()
    try:
        assert "HTTP/1.1 200" in _s_client(port, mode, "bot1", tmp_path / "bot1.session", resume=False)
        assert "HTTP/1.1 200" in _s_client(port, mode, "bot2", tmp_path / "bot2.session", resume=False)
        revoke(tmp_path / "acme.crl.pem", "bot1")
        process.send_signal(signal.SIGHUP)
        assert wait_for(log, "TLS reloaded"), "".join(log)
        revoked = _s_client(port, mode, "bot1", tmp_path / "bot1.session", resume=True)
        still_valid = _s_client(port, mode, "bot2", tmp_path / "bot2.session", resume=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    # The tickets survived the reload: both connections resumed.
    assert "Reused," in revoked and "Reused," in still_valid, revoked[-1500:]
    assert "HTTP/1.1 200" in still_valid, still_valid[-1500:]
    assert "HTTP/1.1 401" in revoked and "HTTP/1.1 200" not in revoked, revoked[-1500:]
