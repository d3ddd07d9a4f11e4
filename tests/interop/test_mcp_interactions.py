"""Server-to-client interactions through mcpgw, with the official MCP Python SDK (2.3.0) as client and as upstream.

Progress, sampling, elicitation, roots and cancellation, for both client generations (the SDK's `mode="legacy"`,
which initializes with 2025-11-25, and `mode="auto"`, which discovers 2026-07-28) and the three upstream modes
(stateful with SSE responses, JSON responses, stateless). In 2025-11-25 the upstream asks the client with a
standalone server-to-client request (`sampling/createMessage`, `elicitation/create`, `roots/list`) on the call's SSE
stream, and the client answers with a POST of the JSON-RPC response; in 2026-07-28 the upstream answers the
`tools/call` with `resultType: "input_required"` and the client retries the call with `inputResponses` and the
sealed `requestState` (docs/protocol.md: the retry is a `tools/call`, decided and audited like any other, and the
multi round-trip members pass through untouched).

What the protocol cannot carry in a combination, the gateway cannot either: a JSON response has no room for
progress notifications, and a 2025-11-25 server without an SSE stream per session (JSON responses, stateless) has no
back-channel for a server-to-client request — the SDK upstream answers such a tool with `-32600`. So every test
first runs the same thing directly against the upstream (the baseline), checks that baseline against what the SDK
is known to do, and then requires the gateway to give the client exactly the baseline's outcome — plus, where the
thing does travel, checks on the way: the client's callback saw the upstream's question, the upstream's result holds
the callback's answer, what reached the upstream (`GET /_test/requests`), and the audit log.

The tools are `write_*` (acme's policy allows and audits them: R2), on `sdk_upstream.py MODE PORT interactive`.

Matrix: both tests run client generation × upstream mode × authentication (mTLS, JWT), 12 cases each:
`test_interactions` (progress, sampling, elicitation, roots, on one client connection) and `test_cancellation`. The
file takes about a minute and a half on two cores.
"""
import subprocess
import time
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CreateMessageResult, ElicitResult, ListRootsResult, Root, TextContent

from test_mcp_modern import LEGACY, MODERN, audit_records, credentials, upstream_base, upstream_requests
from test_mcp_sdk_conformance import gateway, start_upstream  # noqa: F401 - gateway is a fixture

WAIT = 10  # seconds: the longest any test waits for one thing
SETTLE = 2  # seconds: how long a cancellation may take to reach the upstream's task
SLOW = 20  # seconds: how long the slow tool sleeps unless cancelled

# The resolver keys the SDK upstream gives its questions (`inputRequests` / `inputResponses`).
KEYS = {
    "write_with_sampling": "__main__:ask_model",
    "write_with_elicitation": "__main__:ask_user",
    "write_with_roots": "__main__:ask_roots",
}
NO_BACK_CHANNEL = -32600  # the SDK upstream's error when a 2025-11-25 request has no stream to ask the client on


@pytest.fixture(params=["stateful-sse", "json", "stateless"])
def upstream(request):
    """The interactive SDK upstream (the `gateway` fixture, imported above, proxies to it)."""
    process, url = start_upstream(request.param, "interactive")
    yield url
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # a task the protocol did not cancel (JSON responses, 2026-07-28) still sleeps
        process.kill()
        process.wait(timeout=5)


@pytest.fixture
def upstream_mode(request, upstream) -> str:
    return request.node.callspec.params["upstream"]


async def slow_calls(upstream_url: str) -> list[dict]:
    """What became of each `write_slowly` call: `tag`, `outcome` (running | completed | cancelled), `elapsed`."""
    async with httpx2.AsyncClient(timeout=WAIT) as plain:
        return (await plain.get(upstream_base(upstream_url) + "/_test/slow")).json()


class Callbacks:
    """The client's side of the interactions: answers, and notes what it was asked."""

    def __init__(self, marker: str):
        self.marker = marker
        self.asked: list[tuple] = []
        self.progress: list[tuple] = []

    async def sampling(self, context, params) -> CreateMessageResult:
        self.asked.append(("sampling", params.messages[0].content.text, params.max_tokens))
        return CreateMessageResult(role="assistant", model=f"model-{self.marker}",
                                   content=TextContent(type="text", text=f"sampled {self.marker}"))

    async def elicitation(self, context, params) -> ElicitResult:
        self.asked.append(("elicitation", params.message, sorted(params.requested_schema["properties"])))
        return ElicitResult(action="accept", content={"name": f"name-{self.marker}", "count": 7})

    async def roots(self, context) -> ListRootsResult:
        self.asked.append(("roots",))
        return ListRootsResult(roots=[Root(uri=f"file:///workspace/{self.marker}", name=f"root-{self.marker}")])

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    def client_options(self) -> dict:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.roots}


@asynccontextmanager
async def open_client(target: str | int, mode: str, auth: str, callbacks: Callbacks):
    """An SDK `Client` with `callbacks`: straight to the upstream (`target` a URL) or through the gateway (a port),
    as acme/bot1."""
    if isinstance(target, str):
        async with Client(target, mode=mode, read_timeout_seconds=WAIT, **callbacks.client_options()) as client:
            yield client
        return
    context, headers = credentials(auth)
    http = httpx2.AsyncClient(verify=context, headers=headers, timeout=httpx2.Timeout(WAIT, read=3 * WAIT))
    async with http:
        transport = streamable_http_client(f"https://localhost:{target}/mcp", http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=WAIT, **callbacks.client_options()) as client:
            yield client


async def outcome_of(call) -> tuple:
    """("result", is_error, text) or ("error", code, message) or ("timeout",)."""
    try:
        with anyio.fail_after(WAIT):
            result = await call
    except MCPError as error:
        return "error", error.error.code, error.error.message
    except TimeoutError:
        return ("timeout",)
    return "result", bool(result.is_error), result.content[0].text if result.content else None


def expected_outcomes(marker: str) -> dict[str, tuple]:
    return {
        "write_with_progress": ("result", False, "progressed 3 steps"),
        "write_with_sampling": ("result", False, f"model model-{marker} said: sampled {marker}"),
        "write_with_elicitation": ("result", False, f"user said: name=name-{marker} count=7"),
        "write_with_roots": ("result", False, f"roots: root-{marker}=file:///workspace/{marker}"),
    }


EXPECTED_ASKED = [
    ("sampling", "What is in the report?", 50),
    ("elicitation", "Who wrote the report?", ["count", "name"]),
    ("roots",),
]
EXPECTED_PROGRESS = [(1.0, 3.0, "step 1 of 3"), (2.0, 3.0, "step 2 of 3"), (3.0, 3.0, "step 3 of 3")]


async def interact(target: str | int, mode: str, auth: str, marker: str) -> dict:
    callbacks = Callbacks(marker)
    async with open_client(target, mode, auth, callbacks) as client:
        outcome = {"version": client.protocol_version}
        outcome["write_with_progress"] = await outcome_of(
            client.call_tool("write_with_progress", {"steps": 3}, progress_callback=callbacks.on_progress))
        outcome["write_with_sampling"] = await outcome_of(
            client.call_tool("write_with_sampling", {"prompt": "What is in the report?"}))
        outcome["write_with_elicitation"] = await outcome_of(
            client.call_tool("write_with_elicitation", {"question": "Who wrote the report?"}))
        outcome["write_with_roots"] = await outcome_of(client.call_tool("write_with_roots", {}))
    outcome["asked"] = callbacks.asked
    outcome["progress"] = callbacks.progress
    return outcome


# 1. Progress, sampling, elicitation, roots ------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["mtls", "jwt"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_interactions(gateway, upstream, upstream_mode, mode, auth):
    port, audit = gateway
    url = upstream
    modern = mode == "auto"

    # The baseline: the SDK client straight to the SDK upstream.
    direct = anyio.run(interact, url, mode, auth, "direct")
    streams = upstream_mode != "json"  # an SSE response can carry notifications before the result
    back_channel = modern or upstream_mode == "stateful-sse"
    assert direct["version"] == (MODERN if modern else LEGACY)
    assert direct["progress"] == (EXPECTED_PROGRESS if streams else [])
    assert direct["asked"] == (EXPECTED_ASKED if back_channel else [])
    for tool, expected in expected_outcomes("direct").items():
        if tool == "write_with_progress" or back_channel:
            assert direct[tool] == expected, (tool, direct[tool])
        else:
            assert direct[tool][:2] == ("error", NO_BACK_CHANNEL), (tool, direct[tool])
    before = len(upstream_requests(url))

    # Through the gateway: the same, for the client.
    through = anyio.run(interact, port, mode, auth, "gateway")
    assert through["version"] == direct["version"]
    assert through["progress"] == direct["progress"], "progress notifications lost or changed on the way"
    assert through["asked"] == direct["asked"], "the client's callbacks were not asked what the upstream asked"
    for tool, expected in expected_outcomes("gateway").items():
        wanted = expected if direct[tool] == expected_outcomes("direct")[tool] else direct[tool]
        assert through[tool] == wanted, (tool, through[tool], "directly:", direct[tool])

    # What reached the upstream.
    seen = upstream_requests(url)[before:]
    calls = [entry for entry in seen if entry["method"] == "tools/call"]
    by_tool = {tool: [entry for entry in calls if entry["name"] == tool] for tool in expected_outcomes("gateway")}
    assert len(by_tool["write_with_progress"]) == 1
    assert not any(entry["input_responses"] or entry["request_state"] for entry in by_tool["write_with_progress"])
    for tool, key in KEYS.items():
        entries = by_tool[tool]
        if modern:
            # The first round, then the retry with the client's answer and the upstream's own state, intact (the
            # upstream's result above holds the answer; a changed requestState would have been refused).
            assert [(e["input_responses"], e["request_state"]) for e in entries] == [(None, False), ([key], True)], \
                (tool, entries)
            assert entries[0]["arguments"] == entries[1]["arguments"]
            assert all(e["headers"].get("mcp-name") == tool for e in entries)
        else:
            assert [(e["input_responses"], e["request_state"]) for e in entries] == [(None, False)], (tool, entries)
    responses = [entry for entry in seen if entry["response"]]
    assert len(responses) == (3 if back_channel and not modern else 0), \
        "the client's answers to the upstream's requests did not all reach the upstream"
    assert all(entry["headers"].get("mcp-protocol-version") == through["version"]
               for entry in seen if entry["method"] != "initialize")

    # The audit log: each round of a call decided (R2: write_* is audited) — two tools/call records for one
    # logical call in 2026-07-28, with the same arguments.
    records = audit_records(audit)
    assert all(r["tenant"] == "acme" and r["agent"] == "bot1" and r["auth_method"] == auth for r in records)
    tool_records = [r for r in records if r.get("method") == "tools/call"]
    for tool in expected_outcomes("gateway"):
        mine = [r for r in tool_records if r.get("target") == tool]
        rounds = 2 if modern and tool in KEYS else 1
        assert [(r["decision"], r.get("rule")) for r in mine] == [("audit", "R2")] * rounds, (tool, mine)
        assert all(r.get("upstream_status") == 200 for r in mine), (tool, mine)
        assert len({str(r.get("arguments")) for r in mine}) == 1
    assert not [r for r in records if r["decision"] not in ("allow", "audit")], "a message was refused"
    if modern:
        assert not any(r.get("method") == "initialize" for r in records)
    else:
        # The client's answers to the upstream's requests are plumbing: forwarded and recorded, never decided.
        answers = [r for r in records if r.get("method") == "response"]
        assert [(r["http_method"], r["decision"], r.get("rule")) for r in answers] == \
            [("POST", "allow", "protocol")] * (3 if back_channel else 0), answers


# 2. Cancellation ---------------------------------------------------------------------------------------------------------


def finished(entry: dict) -> bool:
    return entry["outcome"] != "running"


async def wait_for_slow(url: str, tag: str, until) -> dict | None:
    """Polls the upstream's record of `write_slowly(tag)` until `until(entry)` holds; the entry, or None after SETTLE s
    (or WAIT s when waiting for the call to arrive at all)."""
    limit = WAIT if until is None else SETTLE
    entry = None
    with anyio.move_on_after(limit):
        while True:
            entry = next((e for e in await slow_calls(url) if e["tag"] == tag), None)
            if entry is not None and (until is None or until(entry)):
                return entry
            await anyio.sleep(0.05)
    return entry


async def cancel_slow_call(target: str | int, url: str, mode: str, auth: str, tag: str) -> dict:
    """Starts `write_slowly(tag)`, cancels it (an anyio cancel scope around `call_tool`) once it runs upstream,
    keeps the client open SETTLE s, closes it, and says what the upstream's task did in each phase."""
    outcome: dict = {}
    async with open_client(target, mode, auth, Callbacks(tag)) as client:
        outcome["version"] = client.protocol_version
        async with anyio.create_task_group() as tasks:
            scope = anyio.CancelScope()

            async def call():
                with scope:
                    outcome["result"] = await outcome_of(client.call_tool("write_slowly", {"tag": tag, "seconds": SLOW}))

            tasks.start_soon(call)
            running = await wait_for_slow(url, tag, None)
            outcome["reached"] = running is not None
            cancelled_at = time.monotonic()
            scope.cancel()
        outcome["client_returned_after"] = time.monotonic() - cancelled_at
        entry = await wait_for_slow(url, tag, finished) if running else None
        outcome["while_open"] = entry["outcome"] if entry else None
        outcome["elapsed_while_open"] = entry["elapsed"] if entry else None
    entry = await wait_for_slow(url, tag, finished) if running else None
    outcome["after_close"] = entry["outcome"] if entry else None
    outcome["elapsed"] = entry["elapsed"] if entry else None
    return outcome


def sdk_stream_race(error: BaseException) -> bool:
    """Whether `error` is (or holds) anyio's BrokenResourceError: the official SDK's client, cancelling a call, can
    close its own read stream while its POST task still hands it the answer (seen once in a direct run, with no
    gateway involved)."""
    if isinstance(error, anyio.BrokenResourceError):
        return True
    return isinstance(error, BaseExceptionGroup) and error.subgroup(anyio.BrokenResourceError) is not None


def direct_cancellation(url: str, mode: str, auth: str) -> dict:
    """`cancel_slow_call` straight to the upstream (the baseline), once more under a new tag when the SDK's client
    raced itself (`sdk_stream_race`): the baseline measures the upstream, not the client library."""
    try:
        return anyio.run(cancel_slow_call, url, url, mode, auth, "direct")
    except BaseException as error:
        if not sdk_stream_race(error):
            raise
        return anyio.run(cancel_slow_call, url, url, mode, auth, "direct-again")


@pytest.mark.parametrize("auth", ["mtls", "jwt"])
@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_cancellation(gateway, upstream, upstream_mode, mode, auth):
    port, audit = gateway
    url = upstream
    modern = mode == "auto"

    # The baseline. A 2025-11-25 client sends notifications/cancelled, which a session's server applies at once
    # (stateful-sse, json); a stateless server has no session to find the call in, and its task ends only when the
    # client's connection closes. A 2026-07-28 client closes the call's connection, which ends an SSE response's
    # task at once; an upstream answering with JSON lets the task run on.
    direct = direct_cancellation(url, mode, auth)
    assert direct["reached"] and "result" not in direct
    cancelled_at_once = not modern and upstream_mode != "stateless" or modern and upstream_mode != "json"
    assert direct["while_open"] == ("cancelled" if cancelled_at_once else "running"), direct
    assert direct["after_close"] == ("running" if modern and upstream_mode == "json" else "cancelled"), direct
    before = len(upstream_requests(url))

    through = anyio.run(cancel_slow_call, port, url, mode, auth, "gateway")
    assert through["reached"], "the slow call never reached the upstream"
    assert "result" not in through, through
    assert through["client_returned_after"] < SETTLE
    assert (through["while_open"], through["after_close"]) == (direct["while_open"], direct["after_close"]), \
        f"the upstream saw the cancellation differently through the gateway: {through}; directly: {direct}"
    if through["after_close"] == "cancelled":
        assert through["elapsed"] < SLOW / 4, through  # cancelled, not run to its end

    seen = upstream_requests(url)[before:]
    call = next(entry for entry in seen if entry["method"] == "tools/call" and entry["name"] == "write_slowly")
    cancels = [entry for entry in seen if entry["method"] == "notifications/cancelled"]
    if modern:
        assert cancels == []  # 2026-07-28 has no notifications/cancelled: closing the connection is the cancellation
    elif upstream_mode == "stateless":
        # Outside a session the upstream cannot tell whose call a request id names (another agent's call could be
        # cancelled): acknowledged, recorded and not forwarded. The stateless server could not apply it anyway.
        assert cancels == []
    else:
        assert [entry["cancelled"] for entry in cancels] == [call["id"]], \
            "the client's notifications/cancelled did not reach the upstream for the call it cancels"
    records = audit_records(audit)
    assert all(r["tenant"] == "acme" and r["agent"] == "bot1" and r["auth_method"] == auth for r in records)
    mine = [r for r in records if r.get("method") == "tools/call" and r.get("target") == "write_slowly"]
    assert [(r["decision"], r.get("rule")) for r in mine] == [("audit", "R2")], mine
    if not modern:
        expected = "deny" if upstream_mode == "stateless" else "allow"
        assert [r["decision"] for r in records if r.get("method") == "notifications/cancelled"] == [expected]
