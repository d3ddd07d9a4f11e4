"""A misbehaving MCP upstream for fault-injection tests: asyncio on raw sockets, HTTP/1.1 written by hand.

    python fault_upstream.py [--mode MODE] [--port PORT]

prints one JSON line `{"port": P, "control": C}` on standard output once both listeners accept connections, then
serves until SIGTERM/SIGINT. The MCP endpoint (any path) is on P; the control listener on C answers

    GET  /stats          {"mode": …, "received": {mode: count}, "total": n, "methods": {…}, "ids": [JSON-RPC ids]}
    POST /mode/<MODE>    switches the behaviour for every later request (and `refuse` closes the listener at once)
    POST /reset          zeroes the counters

Modes:
    healthy      a JSON-RPC result for every request (tools/call: a text content block), keep-alive
    refuse       the port is bound but not listening: connecting is refused (ECONNREFUSED); open connections are cut
    reset_body   200 + application/json head with the full Content-Length, half the body, then RST (SO_LINGER 0)
    reset_sse    200 + text/event-stream (chunked), one event (a log notification), then RST
    garbage      bytes that are not HTTP, then close
    huge_headers a 200 status line followed by 10 MB of header lines (then a body, if the reader is still there)
    stall        reads the request and never answers (until the peer closes)
    slow         the healthy answer, one byte every 50 ms
    delay        the healthy answer after 0.5 s (`--delay`), keep-alive: calls that are in flight, not broken
"""
import argparse
import asyncio
import json
import signal
import socket
import struct
import sys

MODES = ("healthy", "refuse", "reset_body", "reset_sse", "garbage", "huge_headers", "stall", "slow", "delay")

# A response that has started is cut this long after its first bytes, so that the cut is unambiguously mid-response
# (the gateway has read and relayed the head before the RST arrives).
CUT_DELAY = 0.3
SLOW_BYTE_INTERVAL = 0.05
HUGE_HEADER_BYTES = 10 * 1024 * 1024
DELAY = 0.5


class FaultUpstream:
    def __init__(self, mode: str, host: str = "127.0.0.1", port: int = 0):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode}")
        self.mode = mode
        self.host = host
        self.port = port
        self.server: asyncio.AbstractServer | None = None
        self.parked: socket.socket | None = None  # bound, not listening: `refuse`
        self.connections: set[asyncio.StreamWriter] = set()
        self.received: dict[str, int] = {}
        self.methods: dict[str, int] = {}
        self.ids: list = []  # JSON-RPC ids of the requests received, in order (the last 10,000)

    # --- listeners ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((self.host, self.port))
        self.port = probe.getsockname()[1]
        self.parked = probe
        if self.mode != "refuse":
            await self._listen()

    async def _listen(self) -> None:
        if self.server is not None:
            return
        if self.parked is not None:
            self.parked.close()
            self.parked = None
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True, backlog=256)

    async def _unlisten(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.connections):
            _reset(writer)
        self.connections.clear()
        if self.parked is None:
            parked = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            parked.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            parked.bind((self.host, self.port))  # holds the port; without listen(2) a SYN is answered with RST
            self.parked = parked

    async def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        if mode == "refuse":
            await self._unlisten()
        else:
            await self._listen()

    # --- the MCP endpoint -----------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                mode = self.mode
                self.received[mode] = self.received.get(mode, 0) + 1
                _, _, body = request
                message = _json(body)
                method = message.get("method", "?") if isinstance(message, dict) else "batch"
                self.methods[method] = self.methods.get(method, 0) + 1
                if isinstance(message, dict) and "id" in message:
                    self.ids = self.ids[-9999:] + [message["id"]]
                keep_open = await getattr(self, "_" + mode)(reader, writer, message)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self.connections.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _healthy(self, reader, writer, message) -> bool:
        writer.write(_healthy_response(message))
        await writer.drain()
        return True

    async def _delay(self, reader, writer, message) -> bool:
        await asyncio.sleep(DELAY)
        return await self._healthy(reader, writer, message)

    async def _refuse(self, reader, writer, message) -> bool:
        # Only reached by a request that was already in flight when the mode changed.
        _reset(writer)
        return False

    async def _reset_body(self, reader, writer, message) -> bool:
        answer = _healthy_response(message, close=True)
        head, _, body = answer.partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n" + body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(CUT_DELAY)
        _reset(writer)
        return False

    async def _reset_sse(self, reader, writer, message) -> bool:
        event = json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                            "params": {"level": "info", "data": "working"}})
        chunk = f"event: message\ndata: {event}\n\n".encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
        await asyncio.sleep(CUT_DELAY)
        _reset(writer)
        return False

    async def _garbage(self, reader, writer, message) -> bool:
        writer.write(b"\x16\x03\x01\x00\xffNOT-HTTP garbage \x00\x01\x02\xfe\xff\r\n\r\n" + bytes(range(256)) * 4)
        await writer.drain()
        return False

    async def _huge_headers(self, reader, writer, message) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        line = b"X-Padding: " + b"a" * 8180 + b"\r\n"
        sent = 0
        while sent < HUGE_HEADER_BYTES:
            writer.write(line * 16)
            sent += len(line) * 16
            await writer.drain()  # raises once the gateway has given up and closed
        payload = _healthy_body(message)
        writer.write(f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        await writer.drain()
        return False

    async def _stall(self, reader, writer, message) -> bool:
        try:
            await asyncio.wait_for(reader.read(), timeout=600)  # until the peer closes
        except asyncio.TimeoutError:
            pass
        return False

    async def _slow(self, reader, writer, message) -> bool:
        for byte in _healthy_response(message, close=True):
            if writer.is_closing():
                return False
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(SLOW_BYTE_INTERVAL)
        return False

    # --- the control endpoint -------------------------------------------------------------------------------------

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, path, _ = request
            status, answer = 200, {}
            if method == "GET" and path == "/stats":
                answer = {"mode": self.mode, "received": self.received, "total": sum(self.received.values()),
                          "methods": self.methods, "ids": self.ids, "port": self.port}
            elif method == "POST" and path.startswith("/mode/"):
                try:
                    await self.set_mode(path[len("/mode/"):])
                    answer = {"mode": self.mode}
                except ValueError:
                    status, answer = 400, {"error": f"unknown mode; one of {', '.join(MODES)}"}
            elif method == "POST" and path == "/reset":
                self.received.clear()
                self.methods.clear()
                self.ids = []
                answer = {"reset": True}
            else:
                status, answer = 404, {"error": "not found"}
            body = json.dumps(answer).encode()
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# --- HTTP/1.1 by hand ---------------------------------------------------------------------------------------------

async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """One request (method, path, body); None when the peer closed between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return method, path, body


def _json(body: bytes):
    try:
        return json.loads(body) if body else {}
    except ValueError:
        return {}


def _healthy_body(message) -> bytes:
    if isinstance(message, list):
        return json.dumps([json.loads(_healthy_body(item)) for item in message if "id" in item]).encode()
    method = message.get("method", "")
    if method == "tools/call":
        name = message.get("params", {}).get("name", "?")
        result = {"content": [{"type": "text", "text": f"fault_upstream: {name} ok"}], "isError": False}
    elif method == "initialize":
        result = {"protocolVersion": message.get("params", {}).get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "fault_upstream", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": []}
    else:
        result = {}
    return json.dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": result}).encode()


def _healthy_response(message, close: bool = False) -> bytes:
    if isinstance(message, dict) and "id" not in message:
        return b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    body = _healthy_body(message)
    return (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with RST instead of FIN: SO_LINGER on, timeout 0."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def main() -> None:
    global DELAY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="healthy", choices=MODES)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=DELAY, help="seconds before a `delay` answer")
    options = parser.parse_args()
    DELAY = options.delay
    upstream = FaultUpstream(options.mode, port=options.port)
    await upstream.start()
    control = await asyncio.start_server(upstream.control, "127.0.0.1", options.control_port)
    print(json.dumps({"port": upstream.port, "control": control.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    control.close()
    await upstream.set_mode("refuse")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
