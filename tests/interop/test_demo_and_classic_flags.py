"""The README's first command (`mcpgw demo`) and the classic single-dash flags of `mcpgw serve`, run for real."""
import json
import signal
import subprocess

from conftest import ROOT
from test_serve_cli import start


def post(port, body, *extra):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", "certs-dev/gateway-ca.pem", "-H", "Content-Type: application/json",
         "-H", "Accept: application/json, text/event-stream", "--cert", "certs-dev/acme/agents/bot1.pem",
         "--key", "certs-dev/acme/agents/bot1.key", "-w", "\n%{http_code}", *extra, f"https://localhost:{port}/mcp", "-d", body],
        cwd=ROOT, capture_output=True, text=True, timeout=30)
    text, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(text) if text.strip().startswith(("{", "[")) else text


def call(tool, arguments, id=1):
    return json.dumps({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})


def test_demo_serves_allows_denies_and_audits():
    process = subprocess.Popen(
        [__import__("conftest").mcpgw_binary(), "demo", "--listen", "127.0.0.1:0"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(200):
            line = process.stderr.readline()
            if "listening" in line and "listen.address=127.0.0.1:" in line:
                port = int(line.split("listen.address=127.0.0.1:")[1].split()[0])
                break
        assert port, "demo did not start"
        status, answer = post(port, call("read_file", {"path": "readme.txt"}))
        assert status == 200 and "Welcome to the mcpgw demo" in answer["result"]["content"][0]["text"]
        status, answer = post(port, call("delete_file", {"path": "readme.txt"}, id=2))
        assert status == 200 and answer["error"]["code"] == -31001 and answer["error"]["data"]["rule"] == "R3"
        status, answer = post(port, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        assert sorted(tool["name"] for tool in answer["result"]["tools"]) == ["list_files", "read_file", "write_file"]
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["decision"] for r in records] == ["allow", "deny", "allow"]
    assert records[1]["rule"] == "R3" and records[0]["upstream_status"] == 200


def test_classic_single_dash_flags():
    process, port, _ = start("-upstream", "http://127.0.0.1:9/mcp", "-policy", "policies/acme/production.json",
                             "-listen", "127.0.0.1:0", "--audit-log", "/dev/null")
    try:
        # The classic document alone: delete_* is denied by R3 …
        status, answer = post(port, call("delete_file", {"path": "x"}))
        assert status == 200 and answer["error"]["data"]["rule"] == "R3"
        # … and read_file is allowed and forwarded to the (unreachable) upstream: 502, no address in the answer.
        status, answer = post(port, call("read_file", {"path": "notes.txt"}))
        assert status == 502 and answer["error"]["code"] == -31004 and "127.0.0.1" not in json.dumps(answer)
        # The hardening document is not loaded in this mode: an absolute path is only stopped by R4's '..' rule.
        status, answer = post(port, call("read_file", {"path": "../etc/passwd"}))
        assert answer["error"]["data"]["rule"] == "R4"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
