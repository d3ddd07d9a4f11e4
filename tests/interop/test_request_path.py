"""The request path of the real `mcpgw serve` process under hostile and ending load: memory stays bounded when
unauthenticated clients send large bodies, and SIGTERM under load loses no audit record."""
import hashlib
import json
import signal
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import ROOT
from test_serve_cli import start


def tls_context(agent: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ROOT / "certs-dev" / "gateway-ca.pem"))
    if agent:
        context.load_cert_chain(str(ROOT / "certs-dev" / f"{agent}.pem"), str(ROOT / "certs-dev" / f"{agent}.key"))
    return context


def memory_kib(pid: int, field: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def unauthenticated_upload(port: int, results: list, index: int) -> None:
    """Sends a 4 MiB body without credentials; records the status line and how much of the body went out."""
    sent = 0
    status = ""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with tls_context(None).wrap_socket(raw, server_hostname="localhost") as conn:
                conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 4194304\r\n\r\n")
                chunk = b" " * 65536
                try:
                    while sent < 4 * 1024 * 1024:
                        conn.sendall(chunk)
                        sent += len(chunk)
                except OSError:
                    pass
                try:
                    status = conn.recv(64).decode(errors="replace").split("\r\n")[0]
                except OSError:
                    pass
    except OSError as error:
        status = f"error: {error}"
    results[index] = (status, sent)


def test_unauthenticated_bodies_are_refused_without_buffering_them():
    process, port, _ = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--audit-log", "/dev/null")
    try:
        baseline = memory_kib(process.pid, "VmRSS")
        results: list = [None] * 64
        threads = [threading.Thread(target=unauthenticated_upload, args=(port, results, i)) for i in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        peak = memory_kib(process.pid, "VmHWM")
        statuses = [result[0] for result in results]
        assert all(status.startswith("HTTP/1.1 401") for status in statuses), statuses
        # 64 × 4 MiB = 256 MiB if bodies were buffered before authentication; each connection holds at most a
        # few socket reads' worth now.
        assert peak - baseline < 48 * 1024, f"peak RSS grew by {(peak - baseline) // 1024} MiB"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


class SlowUpstream(BaseHTTPRequestHandler):
    """Answers every POST after `delay` seconds, counting the requests it received."""
    delay = 5.0
    received = 0
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with SlowUpstream.lock:
            SlowUpstream.received += 1
        time.sleep(SlowUpstream.delay)
        request = json.loads(body)
        answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": {"ok": True}}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def call(port: int, body: dict, results: list, index: int) -> None:
    payload = json.dumps(body).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with tls_context("acme/agents/bot1").wrap_socket(raw, server_hostname="localhost") as conn:
                conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                             b"Accept: application/json, text/event-stream\r\n"
                             + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                results[index] = conn.recv(4096).decode(errors="replace").split("\r\n")[0] or "closed"
    except OSError as error:
        results[index] = f"error: {error}"


def test_sigterm_under_load_keeps_a_record_of_every_decision(tmp_path):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), SlowUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["limits"]["shutdown_grace_seconds"] = 1
    for tenant in config["tenants"].values():
        tenant.pop("upstream", None)
    config["policies"] = str(ROOT / "policies")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config).replace('"certs-dev/', f'"{ROOT}/certs-dev/'))
    audit = tmp_path / "audit.log"
    process, port, _ = start("--config", str(path), "--listen", "127.0.0.1:0", "--audit-log", str(audit),
                             "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp")
    try:
        bodies = []
        for i in range(20):
            arguments = {"path": "../secret"} if i % 4 == 0 else {"path": "notes.txt"}
            bodies.append({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "read_file", "arguments": arguments}})
        results: list = [None] * len(bodies)
        threads = [threading.Thread(target=call, args=(port, body, results, i)) for i, body in enumerate(bodies)]
        for thread in threads:
            thread.start()
        deadline = time.time() + 20
        while SlowUpstream.received < 15 and time.time() < deadline:
            time.sleep(0.01)
        assert SlowUpstream.received == 15
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        upstream.shutdown()
    assert process.returncode == 0, stderr
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = sorted(record["decision"] for record in records)
    assert decisions == ["allow"] * 15 + ["deny"] * 5, decisions
    # The calls cut by shutdown say so in their records.
    assert sum("the gateway shut down" in record["reason"] for record in records) == 15


def test_argument_digest_is_sha256_of_the_bytes_the_client_sent(tmp_path):
    """A redacted record's digest is hashlib's SHA-256 of exactly the arguments' bytes in the body, whitespace and
    escapes as sent, for each message of a batch."""
    audit = tmp_path / "audit.log"
    process, port, _ = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--audit-log", str(audit))
    try:
        first = b'{"path" : "..\\/secret",\n "n":[1, 2.50]}'
        second = b'{ "p\\u0061th":"../etc/passwd" }'
        body = (b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":' + first + b'}},'
                b' {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":' + second
                + b' ,"name":"read_file"}}]')
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with tls_context("acme/agents/bot1").wrap_socket(raw, server_hostname="localhost") as conn:
                conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                             b"Accept: application/json, text/event-stream\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"-31001") == 2, answer[:300]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    records = {record["jsonrpc_id"]: record for record in map(json.loads, audit.read_text().splitlines())}
    assert records[1]["arguments"] == {"keys": ["path", "n"], "sha256": hashlib.sha256(first).hexdigest()}
    assert records[2]["arguments"] == {"keys": ["path"], "sha256": hashlib.sha256(second).hexdigest()}
    assert "secret" not in audit.read_text() and "passwd" not in audit.read_text()


def test_a_client_that_does_not_read_its_answers_is_not_read_from(tmp_path):
    """Requests answered at once (401: no credentials), pipelined by a client that never reads its answers: once the
    answers back up, the gateway stops reading from that client, instead of answering everything into its memory.
    Without the pause, all 60,000 requests are answered (and recorded); with it, what the socket buffers hold."""
    audit = tmp_path / "audit.jsonl"
    process, port, _ = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--audit-log", str(audit))
    request = (b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    batch, batches = 500, 120
    stop = threading.Event()
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the client's side holds little of the answers
    raw.settimeout(60)
    raw.connect(("127.0.0.1", port))
    conn = tls_context(None).wrap_socket(raw, server_hostname="localhost")

    def send() -> None:
        try:
            for _ in range(batches):
                if stop.is_set():
                    return
                conn.sendall(request * batch)
        except OSError:
            pass

    def records() -> int:
        return sum(1 for _ in open(audit)) if audit.exists() else 0

    sender = threading.Thread(target=send, daemon=True)
    try:
        sender.start()
        # Until the count of records has not moved for 2 s (bounded).
        answered, steady_since, deadline = -1, time.monotonic(), time.monotonic() + 90
        while time.monotonic() < deadline:
            now = records()
            if now != answered:
                answered, steady_since = now, time.monotonic()
            elif time.monotonic() - steady_since > 2:
                break
            time.sleep(0.25)
        print(f"\n[backpressure] {answered} of {batch * batches} pipelined requests answered while the client read nothing")
        assert process.poll() is None
        assert 0 < answered < batch * batches // 2, f"{answered} of {batch * batches} requests answered to a client that reads nothing"
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        conn.close()
        sender.join(timeout=10)
