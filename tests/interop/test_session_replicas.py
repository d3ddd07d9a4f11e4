"""Two `mcpgw serve` processes with the same `sessions.keys` serve one client session alternately, in front of the
official MCP Python SDK as a stateful upstream (which refuses session ids it did not issue): the session handle the
client holds is sealed, carries the upstream's session id, and opens in either process. A process with another key,
or a handle presented by another agent, gets 404 and an audit record."""
import json
import secrets
import signal

import httpx2

from conftest import ROOT
from test_mcp_sdk_conformance import client_context, start_upstream
from test_serve_cli import start as start_gateway

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def absolute(value):
    """The configuration with every relative path that exists in the repository made absolute (it moves to tmp)."""
    if isinstance(value, dict):
        return {key: absolute(item) for key, item in value.items()}
    if isinstance(value, list):
        return [absolute(item) for item in value]
    if isinstance(value, str) and not value.startswith("/") and (ROOT / value).exists():
        return str(ROOT / value)
    return value


def gateway_with_key(tmp_path, name, secret, upstream):
    key = tmp_path / f"{name}.key"
    key.write_text(secret)
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["sessions"] = {"keys": [{"id": "k1", "secret_file": str(key)}]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(absolute(config)))
    audit = tmp_path / f"{name}-audit.log"
    process, port, _ = start_gateway("--config", str(path), "--listen", "127.0.0.1:0", "--upstream", upstream,
                                     "--audit-log", str(audit))
    return process, port, audit


def post(port, body, agent="acme/agents/bot1", session=None):
    headers = dict(HEADERS)
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-06-18"
    with httpx2.Client(verify=client_context(agent), timeout=20) as client:
        return client.post(f"https://localhost:{port}/mcp", json=body, headers=headers)


def test_two_replicas_serve_one_session(tmp_path):
    upstream, url = start_upstream("stateful-sse")
    shared = secrets.token_hex(32)
    started = [gateway_with_key(tmp_path, "a", shared, url), gateway_with_key(tmp_path, "b", shared, url),
               gateway_with_key(tmp_path, "c", secrets.token_hex(32), url)]
    (a, port_a, _), (b, port_b, audit_b), (c, port_c, audit_c) = started
    try:
        created = post(port_a, INITIALIZE)
        assert created.status_code == 200, created.text
        handle = created.headers["mcp-session-id"]
        assert handle.startswith("mcpgw1.k1."), handle
        assert post(port_b, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=handle).status_code == 202
        for index, port in enumerate([port_b, port_a, port_b]):
            listed = post(port, {"jsonrpc": "2.0", "id": 10 + index, "method": "tools/list"}, session=handle)
            assert listed.status_code == 200, listed.text
            assert "read_file" in listed.text and "delete_file" not in listed.text
        # Another key: the handle means nothing there. Another agent: the handle is not theirs.
        assert post(port_c, {"jsonrpc": "2.0", "id": 20, "method": "tools/list"}, session=handle).status_code == 404
        assert post(port_b, {"jsonrpc": "2.0", "id": 21, "method": "tools/list"}, agent="acme/agents/bot2",
                    session=handle).status_code == 404
    finally:
        for process, _, _ in started:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        upstream.terminate()
        upstream.wait(timeout=10)
    # The audit logs are complete once the processes have stopped.
    records = [json.loads(line) for line in audit_b.read_text().splitlines() if line.strip()]
    assert any(r.get("rule") == "session_binding" and r.get("agent") == "bot2" for r in records)
    records_c = [json.loads(line) for line in audit_c.read_text().splitlines() if line.strip()]
    assert any(r.get("rule") == "session_binding" for r in records_c)


def test_a_broken_session_key_is_a_configuration_error(tmp_path):
    import subprocess
    from conftest import mcpgw_binary
    key = tmp_path / "short.key"
    key.write_text("abcd")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["sessions"] = {"keys": [{"id": "k1", "secret_file": str(key)}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(absolute(config)))
    result = subprocess.run([mcpgw_binary(), "serve", "--config", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "sessions.keys[0]" in result.stderr and "32 bytes" in result.stderr
