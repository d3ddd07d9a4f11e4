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
    upstream, process, port, log = _gateway_with_own_crl(tmp_path, "/dev/null")
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


class StreamingUpstream(EchoUpstream):
    """Echoes calls, and answers GET with an SSE stream: one event every 100 ms for up to 20 s."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for number in range(200):
                event = f'data: {{"jsonrpc":"2.0","method":"notifications/message","params":{{"n":{number}}}}}\n\n'.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass


def _gateway_with_own_crl(tmp_path, audit, handler=EchoUpstream):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    shutil.copy(DEV / "acme" / "ca.crl.pem", tmp_path / "acme.crl.pem")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text().replace('"certs-dev/', f'"{DEV}/'))
    config["tenants"]["acme"]["crl"] = [str(tmp_path / "acme.crl.pem")]
    config["policies"] = str(ROOT / "policies")
    (tmp_path / "config.json").write_text(json.dumps(config))
    process, port, _ = start("--config", str(tmp_path / "config.json"), "--listen", "127.0.0.1:0", "--audit-log", str(audit),
                             "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp")
    log: list = []
    threading.Thread(target=lambda: log.extend(iter(process.stderr.readline, "")), daemon=True).start()
    return upstream, process, port, log


def _stop(process, upstream):
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    upstream.shutdown()


def _refusals(audit):
    """The certificate_refused records of the audit log at `audit`."""
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    return [r for r in records if r.get("rule") == "certificate_refused"]


def _client_context(agent):
    import ssl
    context = ssl.create_default_context(cafile=str(DEV / "gateway-ca.pem"))
    context.load_cert_chain(DEV / "acme" / "agents" / f"{agent}.pem", DEV / "acme" / "agents" / f"{agent}.key")
    return context


def _keep_alive_connection(port, agent):
    import http.client
    return http.client.HTTPSConnection("localhost", port, context=_client_context(agent), timeout=10)


def _call(connection, headers=None):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    connection.request("POST", "/mcp", body, {"Content-Type": "application/json",
                                              "Accept": "application/json, text/event-stream", **(headers or {})})
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_a_certificate_revoked_while_its_connection_is_open_is_refused_on_that_connection(tmp_path):
    """A CRL reload reaches connections that are already open: the next request of the revoked agent's keep-alive
    connection is refused (401, recorded as certificate_refused), another agent's open connection goes on."""
    audit = tmp_path / "audit.jsonl"
    upstream, process, port, log = _gateway_with_own_crl(tmp_path, audit)
    try:
        revoked, valid = _keep_alive_connection(port, "bot1"), _keep_alive_connection(port, "bot2")
        assert _call(revoked)[0] == 200 and _call(valid)[0] == 200
        revoke(tmp_path / "acme.crl.pem", "bot1")
        process.send_signal(signal.SIGHUP)
        assert wait_for(log, "TLS reloaded"), "".join(log)
        status, body = _call(revoked)
        assert status == 401 and "certificate_refused" in body, body
        assert _call(valid)[0] == 200
        assert _call(valid)[0] == 200, "the other agent's connection is checked again on every request"
    finally:
        _stop(process, upstream)
    refused = _refusals(audit)
    assert len(refused) == 1 and "reloaded trust" in refused[0]["reason"], refused
    # The record says which certificate was refused, in its reason: its `agent` stays empty (a refused certificate's
    # URI may name anyone, and a search of the log by agent must not find it).
    assert "names spiffe://mcpgw.dev/tenant/acme/agent/bot1" in refused[0]["reason"] and "agent" not in refused[0], refused
    assert "serial " in refused[0]["reason"] and "CN=bot1" in refused[0]["reason"], refused


def test_a_resumed_session_whose_certificate_was_revoked_is_refused_even_with_a_valid_token(tmp_path, mcpgw):
    """The revoked certificate of a resumed session is not taken for no certificate: a bearer token on that
    connection does not make it a token-only caller."""
    status, token = mcpgw("issue-token", "--tenant", "acme", "--agent", "bot1")
    assert status == 0, token
    audit = tmp_path / "audit.jsonl"
    upstream, process, port, log = _gateway_with_own_crl(tmp_path, audit)
    import subprocess
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    request = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Accept: application/json, text/event-stream\r\n"
               f"Authorization: Bearer {token.strip()}\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    base = DEV / "acme" / "agents" / "bot1"

    def s_client(resume):
        command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-tls1_3",
                   "-CAfile", str(DEV / "gateway-ca.pem"), "-cert", f"{base}.pem", "-key", f"{base}.key",
                   "-ign_eof", "-sess_in" if resume else "-sess_out", str(tmp_path / "bot1.session")]
        return subprocess.run(command, input=request, capture_output=True, text=True, timeout=30).stdout
    try:
        assert "HTTP/1.1 200" in s_client(resume=False)
        revoke(tmp_path / "acme.crl.pem", "bot1")
        process.send_signal(signal.SIGHUP)
        assert wait_for(log, "TLS reloaded"), "".join(log)
        resumed = s_client(resume=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    assert "Reused," in resumed, resumed[-1500:]
    assert "HTTP/1.1 401" in resumed and "certificate_refused" in resumed, resumed[-1500:]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(r.get("rule") == "certificate_refused" and "resumed" in r["reason"] for r in records), records


def _open_stream(port, agent):
    import socket
    stream = _client_context(agent).wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
    stream.sendall(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    return stream


def _read_until(stream, predicate, timeout=8):
    """Reads until predicate(text so far) holds; returns (text, whether the stream ended)."""
    text, deadline = b"", time.time() + timeout
    while time.time() < deadline and not predicate(text.decode(errors="replace")):
        try:
            chunk = stream.recv(65536)
        except OSError:
            return text.decode(errors="replace"), True
        if not chunk:
            return text.decode(errors="replace"), True
        text += chunk
    return text.decode(errors="replace"), False


def test_a_stream_whose_certificate_is_revoked_ends_at_the_reload(tmp_path):
    """A GET stream outlives the request that opened it: a CRL reload ends the revoked agent's open stream at once
    (recorded as certificate_refused), and another agent's stream goes on."""
    audit = tmp_path / "audit.jsonl"
    upstream, process, port, log = _gateway_with_own_crl(tmp_path, audit, StreamingUpstream)
    try:
        revoked, valid = _open_stream(port, "bot1"), _open_stream(port, "bot2")
        for stream in (revoked, valid):
            text, ended = _read_until(stream, lambda t: "data:" in t)
            assert "HTTP/1.1 200" in text and not ended, text
        revoke(tmp_path / "acme.crl.pem", "bot1")
        process.send_signal(signal.SIGHUP)
        assert wait_for(log, "TLS reloaded"), "".join(log)
        _, ended = _read_until(revoked, lambda t: False, timeout=5)
        assert ended, "the revoked agent's stream is still open after the reload"
        text, ended = _read_until(valid, lambda t: t.count("data:") >= 5)
        assert not ended and text.count("data:") >= 5, text
        revoked.close()
        valid.close()
    finally:
        _stop(process, upstream)
    refused = _refusals(audit)
    assert len(refused) == 1 and refused[0]["reason"].startswith("stream ended:"), refused
    assert refused[0]["decision"] == "authentication_failed" and "CN=bot1" in refused[0]["reason"], refused
