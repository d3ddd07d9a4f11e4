"""An upstream MCP server built with the official Python SDK (MCPServer), for the conformance tests.

    python sdk_upstream.py MODE PORT [extended | interactive]      MODE: stateful-sse | json | stateless | legacy-sse

With `extended` (test_mcp_modern.py), the server also has what the 2026-07-28 tests need, and only then, so the
tools the older tests list stay as they were:

- `read_file`'s `path` is mirrored into the `Mcp-Param-Path` header (`x-mcp-header: Path`);
- prompts `summarize_doc` and `leak_secrets`, resources `file:///workspace/a.txt` and `file:///etc/passwd`, resource
  templates `file:///workspace/{name}` and `file:///etc/{name}`;
- every list result says `cacheScope: public` (with a ttl), so that a `private` seen by the client is the gateway's;
- `POST /_test/add-tools` adds the tools `write_report` and `delete_everything`, publishes a tools list-changed
  event to `subscriptions/listen` streams, and sends `notifications/tools/list_changed` on the GET stream of every live
  2025-11-25 session (the session generation's channel for it; initialize then advertises `tools.listChanged`, except
  in `stateless` mode, which has no sessions); it answers
  `{"tools": [...], "notified": [session ids whose GET stream was open]}`;
- `GET /_test/get-streams` returns the ids of the sessions whose GET stream is open (to wait for one before a change);
- `GET /_test/requests` returns every POST /mcp the server received: its MCP headers and the body's method and name
  (to tell what the gateway forwarded from what it refused), the keys of `params.inputResponses` and whether
  `params.requestState` was there (a 2026-07-28 multi round-trip retry), the JSON-RPC id, a cancelled request's id
  (`notifications/cancelled`), and whether the body was a response (to a server-to-client request).

With `interactive` (test_mcp_interactions.py), everything `extended` has, plus tools that talk back to the client
(named `write_*`, which acme's policy allows and audits: R2):

- `write_with_progress(steps)` reports progress `steps` times before it answers;
- `write_with_sampling(prompt)`, `write_with_elicitation(question)` and `write_with_roots()` ask the client to sample, to
  fill in a form and for its roots (a standalone server-to-client request before 2026-07-28, an
  `InputRequiredResult` answered by a retry with `inputResponses` from 2026-07-28 on) and echo the answer;
- `write_slowly(tag, seconds)` sleeps up to `seconds` unless cancelled; `GET /_test/slow` returns what became of each
  call: `{"tag", "outcome": "running" | "completed" | "cancelled", "elapsed"}`.
"""
import json
import sys
from typing import Annotated

from pydantic import Field

from mcp.server.mcpserver import MCPServer

mode, port = sys.argv[1], int(sys.argv[2])
interactive = sys.argv[3:] == ["interactive"]
extended = interactive or sys.argv[3:] == ["extended"]
files = {"readme.txt": "hello from the SDK upstream"}

if not extended:
    server = MCPServer("sdk-upstream")

    @server.tool()
    def read_file(path: str) -> str:
        """Read a file."""
        return files.get(path, f"no such file: {path}")

else:
    from mcp.server.caching import CacheHint
    from mcp.server.lowlevel.server import NotificationOptions
    from mcp.server.streamable_http import GET_STREAM_KEY
    from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    bus = InMemorySubscriptionBus()
    public = CacheHint(ttl_ms=60_000, scope="public")
    server = MCPServer(
        "sdk-upstream", subscriptions=bus,
        cache_hints={method: public for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list")},
    )

    # The session generation: remember each session's connection, to send it notifications/tools/list_changed on its
    # GET stream (the connection's standalone channel) when the tool list changes, and say so at initialize.
    sessions: dict = {}  # session id -> Connection

    async def remember_sessions(ctx, call_next):
        connection = ctx.session._connection  # noqa: SLF001 - test server
        if connection.session_id is not None:
            sessions[connection.session_id] = connection
        return await call_next(ctx)

    server.middleware.append(remember_sessions)
    if mode != "stateless":  # a stateless server has no GET stream to send it on
        lowlevel = server._lowlevel_server  # noqa: SLF001 - test server
        initialization_options = lowlevel.create_initialization_options
        lowlevel.create_initialization_options = lambda notification_options=None, *args, **kwargs: \
            initialization_options(notification_options or NotificationOptions(tools_changed=True), *args, **kwargs)

    def open_get_streams() -> list[str]:
        instances = server.session_manager._server_instances  # noqa: SLF001 - test server
        return [sid for sid, transport in instances.items() if GET_STREAM_KEY in transport._request_streams]  # noqa: SLF001

    @server.tool()
    def read_file(path: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Path"})]) -> str:
        """Read a file (its path is mirrored into the Mcp-Param-Path header)."""
        return files.get(path, f"no such file: {path}")

    @server.prompt()
    def summarize_doc(topic: str) -> str:
        """Summarize a document."""
        return f"Please summarize {topic}."

    @server.prompt()
    def leak_secrets() -> str:
        """A prompt acme may not get."""
        return "the secrets"

    @server.resource("file:///workspace/a.txt")
    def workspace_file() -> str:
        return "contents of a.txt"

    @server.resource("file:///etc/passwd")
    def passwd() -> str:
        return "root:x:0:0"

    @server.resource("file:///workspace/{name}")
    def workspace_template(name: str) -> str:
        return f"contents of {name}"

    @server.resource("file:///etc/{name}")
    def etc_template(name: str) -> str:
        return f"/etc/{name}"

    @server.custom_route("/_test/add-tools", methods=["POST"])
    async def add_tools(request: Request) -> JSONResponse:
        def write_report(text: str) -> str:
            """Write a report."""
            return f"wrote {len(text)} characters"

        def delete_everything() -> str:
            """Delete everything."""
            return "deleted"

        for tool in (write_report, delete_everything):
            if server._tool_manager.get_tool(tool.__name__) is None:  # noqa: SLF001 - test server
                server.add_tool(tool)
        await bus.publish(ToolsListChanged())
        notified = [sid for sid in open_get_streams() if sid in sessions]
        for sid in notified:
            await sessions[sid].send_tool_list_changed()
        return JSONResponse({"tools": [tool.name for tool in await server.list_tools()], "notified": notified})

    @server.custom_route("/_test/get-streams", methods=["GET"])
    async def get_streams(request: Request) -> JSONResponse:
        return JSONResponse(open_get_streams())

    received: list[dict] = []

    @server.custom_route("/_test/requests", methods=["GET"])
    async def requests_seen(request: Request) -> JSONResponse:
        return JSONResponse(received)

    class RecordRequests:
        """ASGI middleware: notes each POST /mcp (MCP headers, body method and name) before the SDK sees it."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/mcp":
                return await self.app(scope, receive, send)
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            try:
                decoded = json.loads(body)
            except ValueError:
                decoded = None
            params = decoded.get("params") if isinstance(decoded, dict) else None
            received.append({
                "headers": {k: v for k, v in headers.items() if k.startswith("mcp-")},
                "method": decoded.get("method") if isinstance(decoded, dict) else None,
                "name": (params or {}).get("name") if isinstance(params, dict) else None,
                "arguments": (params or {}).get("arguments") if isinstance(params, dict) else None,
                "input_responses": sorted(params["inputResponses"])
                if isinstance(params, dict) and isinstance(params.get("inputResponses"), dict) else None,
                "request_state": isinstance(params, dict) and "requestState" in params,
                "cancelled": (params or {}).get("requestId") if isinstance(params, dict) else None,
                "id": decoded.get("id") if isinstance(decoded, dict) else None,
                "response": isinstance(decoded, dict) and ("result" in decoded or "error" in decoded),
            })
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)

    if interactive:
        import time

        import anyio
        from mcp_types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
        from pydantic import BaseModel

        from mcp.server.mcpserver import Context, Elicit, Resolve, Sample
        from mcp.server.mcpserver import ListRoots as AskRoots

        @server.tool()
        async def write_with_progress(ctx: Context, steps: int = 3) -> str:
            """Report progress `steps` times, then answer."""
            for step in range(1, steps + 1):
                await ctx.report_progress(step, steps, f"step {step} of {steps}")
                await anyio.sleep(0.05)
            return f"progressed {steps} steps"

        def ask_model(prompt: str) -> Sample:
            return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=50)

        @server.tool()
        def write_with_sampling(prompt: str, sampled: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
            """Ask the client's model, echo its answer."""
            return f"model {sampled.model} said: {sampled.content.text}"

        class Answer(BaseModel):
            name: str
            count: int

        def ask_user(question: str) -> Elicit[Answer]:
            return Elicit(question, Answer)

        @server.tool()
        def write_with_elicitation(question: str, answer: Annotated[Answer, Resolve(ask_user)]) -> str:
            """Ask the user, echo the answer."""
            return f"user said: name={answer.name} count={answer.count}"

        def ask_roots() -> AskRoots:
            return AskRoots()

        @server.tool()
        def write_with_roots(roots: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
            """List the client's roots, echo them."""
            return "roots: " + ", ".join(f"{root.name}={root.uri}" for root in roots.roots)

        slow: list[dict] = []

        @server.tool()
        async def write_slowly(tag: str, seconds: float = 20) -> str:
            """Sleep `seconds` unless cancelled; what happened is at GET /_test/slow."""
            entry = {"tag": tag, "outcome": "running", "elapsed": None}
            slow.append(entry)
            started = time.monotonic()
            try:
                await anyio.sleep(seconds)
            except anyio.get_cancelled_exc_class():
                entry["outcome"] = "cancelled"
                raise
            finally:
                entry["elapsed"] = round(time.monotonic() - started, 3)
            entry["outcome"] = "completed"
            return f"slept {seconds} s"

        @server.custom_route("/_test/slow", methods=["GET"])
        async def slow_seen(request: Request) -> JSONResponse:
            return JSONResponse(slow)


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file."""
    files.pop(path, None)
    return f"deleted {path}"


@server.tool()
def list_files() -> str:
    """List files."""
    return "\n".join(sorted(files))


if mode == "legacy-sse":
    # The 2024-11-05 HTTP+SSE transport: GET /sse, POST /messages/?session_id=…
    server.run(transport="sse", host="127.0.0.1", port=port)
elif not extended:
    server.run(
        transport="streamable-http",
        host="127.0.0.1",
        port=port,
        json_response=(mode == "json"),
        stateless_http=(mode == "stateless"),
    )
else:
    import uvicorn

    app = server.streamable_http_app(json_response=(mode == "json"), stateless_http=(mode == "stateless"))
    uvicorn.run(RecordRequests(app), host="127.0.0.1", port=port, log_level="warning")
