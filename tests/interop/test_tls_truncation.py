"""A response that ends with its connection (no length, `Connection: close`) is complete only if the HTTPS upstream
ended TLS with close_notify: a connection cut without it (a forged TCP FIN on the path) is a failure, never a
complete answer relayed to the client."""
import json
import signal
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import ROOT
from test_operations import dev_config, write_config
from test_serve_cli import start

CERTS = ROOT / "certs-dev"
FIRST = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}\n\n'
RESULT = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}]}}\n\n'


def serve_once(listener: socket.socket, clean: bool) -> None:
    """Answers one request with an SSE head without a length and the first event only; then ends the connection
    with close_notify after the result (`clean`) or cuts it after the first event without close_notify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(CERTS / "server.pem"), str(CERTS / "server.key"))
    connection, _ = listener.accept()
    stream = context.wrap_socket(connection, server_side=True)
    data = b""
    while b"\r\n\r\n" not in data:
        data += stream.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += stream.recv(65536)
    stream.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + FIRST)
    if clean:
        stream.sendall(RESULT)
        stream.unwrap().close()
    else:
        raw = socket.socket(fileno=stream.detach())
        raw.shutdown(socket.SHUT_RDWR)
        raw.close()


@pytest.mark.parametrize("clean", [True, False], ids=["close_notify", "cut without close_notify"])
def test_a_response_cut_without_close_notify_is_not_relayed_as_complete(tmp_path, clean):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    upstream = threading.Thread(target=serve_once, args=(listener, clean), daemon=True)
    upstream.start()
    audit = tmp_path / "audit.log"
    config = dev_config(tmp_path)
    config["audit_log"] = str(audit)
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": f"https://localhost:{listener.getsockname()[1]}/mcp",
                              "ca_file": str(CERTS / "gateway-ca.pem")}
    process, port, _ = start("--config", write_config(tmp_path, config), "--listen", "127.0.0.1:0")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    agent = CERTS / "acme" / "agents" / "bot1"
    try:
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "20", "--cacert", str(CERTS / "gateway-ca.pem"), "--cert", f"{agent}.pem",
             "--key", f"{agent}.key", "-H", "Content-Type: application/json",
             "-H", "Accept: application/json, text/event-stream", "--data", body, f"https://localhost:{port}/mcp"],
            capture_output=True, text=True, timeout=30)
        upstream.join(timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
        listener.close()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(records) == 1, records
    if clean:
        assert result.returncode == 0, result.stderr
        assert '"text":"done"' in result.stdout
        assert "upstream request failed" not in log
    else:
        # The client's stream ends without its last chunk: curl reports the transfer as cut.
        assert result.returncode != 0, f"a cut response was relayed as complete: {result.stdout!r}"
        assert "notifications/progress" in result.stdout
        # The call was decided and recorded when its answer began; the operator's log says how the answer ended.
        assert records[0]["decision"] == "allow" and records[0]["upstream_status"] == 200
        assert any("upstream request failed" in line and "close_notify" in line for line in log.splitlines()), log
