"""TLS session resumption with a client certificate, through the running gateway: the resumed connection must
authenticate as the same principal as the first (OpenSSL keeps no verified chain on resumption; the gateway
verifies the leaf again against its current trust store)."""
import json
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT
from test_serve_cli import start


class EchoUpstream(BaseHTTPRequestHandler):
    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": {"ok": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def s_client(port: int, mode: list[str], session: str, resume: bool) -> str:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    request = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Accept: application/json, text/event-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    agent = ROOT / "certs-dev" / "acme" / "agents" / "bot1"
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-CAfile", str(ROOT / "certs-dev" / "gateway-ca.pem"), "-cert", f"{agent}.pem", "-key", f"{agent}.key",
               "-ign_eof", *mode, "-sess_in" if resume else "-sess_out", session]
    result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=30)
    return result.stdout


@pytest.mark.parametrize("mode", [["-tls1_3"], ["-tls1_2"], ["-tls1_2", "-no_ticket"]],
                         ids=["TLS 1.3 tickets", "TLS 1.2 tickets", "TLS 1.2 session cache"])
def test_a_resumed_session_authenticates_as_the_same_principal(tmp_path, mode):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    audit = tmp_path / "audit.log"
    process, port, _ = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--audit-log", str(audit),
                             "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp")
    session = str(tmp_path / "session.pem")
    try:
        first = s_client(port, mode, session, resume=False)
        second = s_client(port, mode, session, resume=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    assert "HTTP/1.1 200" in first, first[-2000:]
    assert "Reused," in second, "the second connection did not resume: " + second[-2000:]
    assert "HTTP/1.1 200" in second, "the resumed connection was not authenticated: " + second[-2000:]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["tenant"], r["agent"], r["auth_method"], r["decision"]) for r in records] == [("acme", "bot1", "mtls", "allow")] * 2
