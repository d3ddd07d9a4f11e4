"""`mcpgw serve` as an operator runs it: configuration file, real listener, curl with a client certificate, SIGTERM."""
import json
import os
import pathlib
import re
import signal
import subprocess
import time

from conftest import ROOT, mcpgw_binary


def start(*args, cwd=ROOT):
    """`mcpgw serve ARGS` in `cwd`, once it listens: (process, port, the standard error lines read so far)."""
    process = subprocess.Popen(
        [mcpgw_binary(), "serve", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 30
    lines = []
    while time.time() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listen.address=127\.0\.0\.1:(\d+)", line)
        if match and "listening" in line:
            return process, int(match.group(1)), lines
    process.kill()
    raise AssertionError("gateway did not start: " + "".join(lines))


def curl(port, *args):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", "certs-dev/gateway-ca.pem", "-w", "\n%{http_code}", *args,
         f"https://localhost:{port}/healthz"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "000"


def test_serve_with_config_answers_and_stops_on_sigterm():
    process, port, _ = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0")
    try:
        assert curl(port, "--cert", "certs-dev/acme/agents/bot1.pem", "--key", "certs-dev/acme/agents/bot1.key") == "200"
        assert curl(port, "--cert", "certs-dev/globex/agents/bot1.pem", "--key", "certs-dev/globex/agents/bot1.key") == "200"
        assert curl(port, "--cert", "certs-dev/acme/agents/revoked.pem", "--key", "certs-dev/acme/agents/revoked.key") == "000"
        assert curl(port) == "200"  # client_auth optional: no certificate is fine at the TLS layer
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "listener stopped" in stderr
    assert "certificate revoked" in stderr


def test_release_builds_allocate_with_mimalloc():
    """The release build links mimalloc in place of glibc's malloc (less CPU per call); debug builds, which the
    sanitizers also use, keep glibc's. The start-up log names the allocator the process runs with, and the libraries
    it has mapped agree."""
    release = f"{os.sep}release{os.sep}" in os.path.realpath(mcpgw_binary())
    process, port, lines = start("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0")
    try:
        maps = pathlib.Path(f"/proc/{process.pid}/maps").read_text()
        assert curl(port) == "200"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    starting = next(line for line in lines if "starting" in line and "memory.allocator=" in line)
    if release:
        assert re.search(r"memory\.allocator=mimalloc \d+\.\d+\.\d+", starting), starting
        assert "libmimalloc" in maps
    else:
        assert "memory.allocator=system" in starting, starting
        assert "libmimalloc" not in maps


def test_serve_refuses_a_configuration_with_a_typo(tmp_path):
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["tenants"]["acme"]["jwt"]["isuers"] = config["tenants"]["acme"]["jwt"].pop("issuers")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([mcpgw_binary(), "serve", "--config", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "tenants.acme.jwt.isuers: unknown key" in result.stderr


def test_serve_refuses_duplicate_keys_in_the_configuration(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text((ROOT / "mcpgw.dev.json").read_text().replace('"listen": "127.0.0.1:8443",', '"listen": "127.0.0.1:8443", "listen": "0.0.0.0:8443",'))
    result = subprocess.run([mcpgw_binary(), "serve", "--config", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert 'duplicate key "listen"' in result.stderr


def test_sighup_does_not_end_a_gateway_started_from_flags_alone():
    # No configuration file (flags only: TLS and health): nothing to reload, and a SIGHUP must not kill it.
    process, port, _ = start("--client-ca", "acme=certs-dev/acme/ca.pem", "--listen", "127.0.0.1:0")
    try:
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None, f"SIGHUP ended the gateway: exit {process.returncode}"
        assert curl(port) == "200"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_serves_as_an_unprivileged_user():
    """The listener, upstream and Redis sockets set TCP options at the TCP level: set at the socket level, option 1 is
    SO_DEBUG, which only root may set, and every connection of an unprivileged gateway was reset."""
    import os
    import threading
    from http.server import ThreadingHTTPServer
    import pytest
    from test_tls_resumption import EchoUpstream
    if os.geteuid() != 0:
        pytest.skip("runs the gateway as nobody, which needs root to switch to")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", mcpgw_binary(), "serve",
               "--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--audit-log", "-",
               "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    port = None
    deadline = time.time() + 30
    while time.time() < deadline and port is None:
        line = process.stderr.readline()
        if not line:
            break
        match = re.search(r"listen.address=127\.0\.0\.1:(\d+)", line)
        if match and "listening" in line:
            port = int(match.group(1))
    try:
        assert port, "the gateway did not start as nobody"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", "certs-dev/gateway-ca.pem", "-w", "\n%{http_code}",
             "--cert", "certs-dev/acme/agents/bot1.pem", "--key", "certs-dev/acme/agents/bot1.key",
             "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
             "--data", body, f"https://localhost:{port}/mcp"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        upstream.shutdown()
    assert result.stdout.strip().endswith("200"), result.stdout + result.stderr + stderr[-2000:]
    assert '"ok": true' in result.stdout


def test_a_port_in_use_names_the_listener_that_could_not_bind():
    """The MCP listener and the admin listener each say which of them could not listen."""
    import socket
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        for args, expected in [(["--listen", f"127.0.0.1:{taken}"], f"cannot listen on 127.0.0.1:{taken}: "),
                               (["--listen", "127.0.0.1:0", "--admin-listen", f"127.0.0.1:{taken}"],
                                f"cannot listen on 127.0.0.1:{taken}: admin listener: ")]:
            result = subprocess.run([mcpgw_binary(), "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert result.returncode != 0 and expected in result.stderr, result.stderr[-800:]
    finally:
        holder.close()


def test_issue_token_says_when_an_id_is_invalid_rather_than_missing():
    result = subprocess.run([mcpgw_binary(), "issue-token", "--tenant", 'a"b', "--agent", "x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 64 and "--tenant 'a\"b' is not a valid id" in result.stderr, result.stderr
    missing = subprocess.run([mcpgw_binary(), "issue-token", "--agent", "x"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 64 and "--tenant is required" in missing.stderr, missing.stderr
