"""An upstream MCP server built with the official Python SDK (MCPServer), for the conformance tests.

    python sdk_upstream.py MODE PORT      MODE: stateful-sse | json | stateless
"""
import sys

from mcp.server.mcpserver import MCPServer

mode, port = sys.argv[1], int(sys.argv[2])
server = MCPServer("sdk-upstream")
files = {"readme.txt": "hello from the SDK upstream"}


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    return files.get(path, f"no such file: {path}")


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file."""
    files.pop(path, None)
    return f"deleted {path}"


@server.tool()
def list_files() -> str:
    """List files."""
    return "\n".join(sorted(files))


server.run(
    transport="streamable-http",
    host="127.0.0.1",
    port=port,
    json_response=(mode == "json"),
    stateless_http=(mode == "stateless"),
)
