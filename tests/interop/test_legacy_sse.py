"""The legacy HTTP+SSE transport (2024-11-05) through mcpgw: the official SDK's `sse_client` against the SDK's own
SSE server. The client is told the gateway's message endpoint (never the upstream's), calls are decided and audited
like Streamable HTTP, the tools list is filtered, and a denied call is answered on the client's stream (the SDK
client sees an error, and the session stays usable)."""
import json
import signal

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from conftest import ROOT
from test_mcp_sdk_conformance import bearer_token, client_context, start_upstream
from test_serve_cli import start as start_gateway
from test_session_replicas import absolute


async def legacy_session(port: int) -> dict:
    outcome: dict = {}

    def factory(headers=None, timeout=None, auth=None):
        return httpx2.AsyncClient(verify=client_context("acme/agents/bot1"), headers=headers, timeout=timeout, auth=auth)

    with anyio.fail_after(60):
        async with sse_client(f"https://localhost:{port}/sse", httpx_client_factory=factory) as (read, write):
            async with ClientSession(read, write) as session:
                outcome["server"] = (await session.initialize()).server_info.name
                outcome["tools"] = sorted(tool.name for tool in (await session.list_tools()).tools)
                outcome["read"] = (await session.call_tool("read_file", {"path": "readme.txt"})).content[0].text
                try:
                    await session.call_tool("delete_file", {"path": "readme.txt"})
                    outcome["denied"] = None
                except MCPError as error:
                    outcome["denied"] = error.error.code
                # Still usable after the refusal.
                outcome["again"] = (await session.call_tool("read_file", {"path": "readme.txt"})).content[0].text
    return outcome


def test_sdk_sse_client_through_mcpgw(tmp_path):
    upstream, url = start_upstream("legacy-sse")
    sse_url = url.replace("/mcp", "/sse")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": url, "legacy_sse_url": sse_url}
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(absolute(config)))
    audit = tmp_path / "audit.log"
    process, port, _ = start_gateway("--config", str(path), "--listen", "127.0.0.1:0", "--audit-log", str(audit))
    try:
        outcome = anyio.run(legacy_session, port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.terminate()
        upstream.wait(timeout=10)
    assert outcome["server"] == "sdk-upstream"
    assert outcome["tools"] == ["list_files", "read_file"]
    assert outcome["read"] == "hello from the SDK upstream"
    assert outcome["denied"] == -31001
    assert outcome["again"] == "hello from the SDK upstream"
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    decisions = [(r.get("method"), r.get("target"), r["decision"]) for r in records]
    assert ("tools/call", "read_file", "allow") in decisions
    assert ("tools/call", "delete_file", "deny") in decisions
    assert ("stream", None, "allow") in decisions
