"""The official MCP Python SDK as client and as upstream server, through mcpgw.

For each upstream mode (stateful with SSE responses, JSON responses, stateless) and each way of authenticating
(mTLS client certificate, bearer JWT over TLS): initialize, tools/list (filtered by policy), an allowed tools/call,
a denied tools/call that the client sees as an error, and the end of the session. The audit log must hold a record
for each decision.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import ROOT, mcpgw_binary
from test_serve_cli import start as start_gateway

HERE = os.path.dirname(__file__)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_upstream(mode: str, *options: str) -> tuple[subprocess.Popen, str]:
    """Starts `sdk_upstream.py MODE PORT OPTIONS…`; returns the process and its MCP endpoint once it accepts connections."""
    port = free_port()
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "sdk_upstream.py"), mode, str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise AssertionError("SDK upstream did not start: " + process.stderr.read().decode())
    return process, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(params=["stateful-sse", "json", "stateless"])
def upstream(request):
    process, url = start_upstream(request.param)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def gateway(upstream, tmp_path):
    audit = tmp_path / "audit.log"
    process, port, _ = start_gateway("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--upstream", upstream,
                                     "--audit-log", str(audit))
    yield port, audit
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == 0


def client_context(certificate: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ROOT / "certs-dev" / "gateway-ca.pem"))
    if certificate:
        context.load_cert_chain(str(ROOT / "certs-dev" / f"{certificate}.pem"), str(ROOT / "certs-dev" / f"{certificate}.key"))
    return context


def bearer_token() -> str:
    result = subprocess.run([mcpgw_binary(), "issue-token", "--tenant", "acme", "--agent", "bot1", "--scope", "tools:read"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.strip()


async def session_run(port: int, certificate: str | None, headers: dict[str, str]) -> dict:
    outcome = {}
    http = httpx2.AsyncClient(verify=client_context(certificate), headers=headers, timeout=httpx2.Timeout(30, read=60))
    async with http:
        async with streamable_http_client(f"https://localhost:{port}/mcp", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                info = await session.initialize()
                outcome["server"] = info.server_info.name
                tools = await session.list_tools()
                outcome["tools"] = sorted(tool.name for tool in tools.tools)
                result = await session.call_tool("read_file", {"path": "readme.txt"})
                outcome["read"] = result.content[0].text
                try:
                    await session.call_tool("delete_file", {"path": "readme.txt"})
                    outcome["denied"] = None
                except MCPError as error:
                    outcome["denied"] = (error.error.code, error.error.message)
                try:
                    await session.call_tool("read_file", {"path": "../../etc/passwd"})
                    outcome["traversal"] = None
                except MCPError as error:
                    outcome["traversal"] = error.error.code
    return outcome


@pytest.mark.parametrize("auth", ["mtls", "jwt"])
def test_sdk_client_through_mcpgw_to_sdk_server(gateway, auth):
    port, audit = gateway
    if auth == "mtls":
        outcome = anyio.run(session_run, port, "acme/agents/bot1", {})
    else:
        outcome = anyio.run(session_run, port, None, {"Authorization": f"Bearer {bearer_token()}"})
    assert outcome["server"] == "sdk-upstream"
    # delete_file is denied to acme (R3), so tools/list does not show it.
    assert outcome["tools"] == ["list_files", "read_file"]
    assert outcome["read"] == "hello from the SDK upstream"
    assert outcome["denied"] is not None and outcome["denied"][0] == -31001 and "R3" in outcome["denied"][1]
    assert outcome["traversal"] == -31001
    time.sleep(0.2)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    decisions = [(r.get("method"), r.get("target"), r["decision"]) for r in records]
    assert ("tools/call", "read_file", "allow") in decisions
    assert ("tools/call", "delete_file", "deny") in decisions
    assert ("initialize", None, "allow") in decisions
    assert all(r.get("tenant") == "acme" and r.get("agent") == "bot1" for r in records)
    assert all(r["auth_method"] == ("mtls" if auth == "mtls" else "jwt") for r in records)
