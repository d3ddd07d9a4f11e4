#!/usr/bin/env python3
"""Driver for bench/soak.sh: a long run of mixed traffic through a real `mcpgw serve`, sampled every few seconds.

Subcommands (bench/soak.sh calls them in this order; each is usable on its own):

  config   writes the gateway configuration into a work folder: mcpgw.dev.json with absolute paths, the given
           listen/admin ports, audit log and upstream for every tenant, a short shutdown grace
  run      the traffic and the sampling against a running gateway (its pid, port and admin port); writes the
           samples (JSON) and one line per request sent (JSONL: its JSON-RPC id, kind, status) for the report
  report   after the gateway has stopped (so that its audit log is complete): the CSV, the PNG (matplotlib) and a
           summary, with audit records matched against the requests sent

The traffic (rates per second at --scale 1; bench/soak.sh runs 2 by default, each loop on its own keep-alive HTTPS connection unless said):

  mtls       acme bot1 (client certificate), in an MCP session: tools/call read_file / list_files (R1), 8/s;
             every 200 calls the session is ended (DELETE) and a new one initialized on a new connection
  bearer     acme bot2, RS256 bearer token, in a session: tools/call read_file (R1), 6/s
  hs256      acme bot3, HS256 bearer token, in a session: tools/call list_files (R1), 3/s
  denied     acme bot1: delete_file (R3), read_file ../../etc/passwd (A1/R4); globex bot1: delete_docs (X3); 5/s
  burst      acme bot1: 8 tools/call write_report back to back every 7 s (L1: 1/s, burst 5): ~5 forwarded, ~3 429
  unauth     no credentials, a malformed bearer token, an unknown-kid token; every other one on a new connection; 4/s
  list       tools/list, acme bot1 and globex bot1 alternately, 2/s
  globex     globex bot1 (certificate): tools/call search_docs (X1; the upstream answers "unknown tool"), 8/s
  churn      globex bot1: tools/call get_status (X1) on a new TLS connection each time, 3/s
  stream-N   2 loops (acme bot1 certificate, acme bot2 token): initialize, notifications/initialized, GET /mcp with
             the session id held open 2-8 s on its own connection (read), closed, DELETE the session
  long-stream  globex bot1: a GET stream held 90 s, then closed, again
  tokens     every 120 s a fresh RS256 and HS256 token (mcpgw issue-token) for bearer/hs256 (a verification, not a
             cache hit)
  sighup     SIGHUP to the gateway every 30 s (t = 30, 60, ...); reload  POST /reload every 30 s (t = 15, 45, ...)

Every request's answer is checked (status, JSON-RPC shape, error code); anything else is an error, kept with its
detail (the first 30). The sampler reads, every --interval seconds: VmRSS and Threads (/proc/PID/status), open file
descriptors (/proc/PID/fd), CPU time (/proc/PID/stat), the audit log's line count, and from /metrics the open
streams, the audit queue and the reload counts; and for the window: requests, req/s, p50/p99/max latency of the
tools/call requests, errors.
"""
import argparse
import datetime
import http.client
import json
import os
import pathlib
import random
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CERTS = ROOT / "certs-dev"
PROTOCOL = "2025-06-18"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
DENIED, RATE_LIMITED = -31001, -31002
IDLE_REUSE_SECONDS = 45


# ------------------------------------------------------------------------------------------------ config
def absolute(value):
    """The configuration with every relative path that exists in the repository made absolute."""
    if isinstance(value, dict):
        return {key: absolute(item) for key, item in value.items()}
    if isinstance(value, list):
        return [absolute(item) for item in value]
    if isinstance(value, str) and not value.startswith("/") and (ROOT / value).exists():
        return str(ROOT / value)
    return value


def cmd_config(args):
    config = absolute(json.loads((ROOT / "mcpgw.dev.json").read_text()))
    config["listen"] = f"127.0.0.1:{args.port}"
    config["audit_log"] = args.audit_log
    config["limits"]["shutdown_grace_seconds"] = 3
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": args.upstream}
    path = pathlib.Path(args.work) / "mcpgw.json"
    path.write_text(json.dumps(config, indent=1) + "\n")
    print(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------------ bookkeeping
class Stats:
    """What the loops did: per-window events for the sampler, totals, one line per request for the audit match."""

    def __init__(self, requests_path):
        self.lock = threading.Lock()
        self.window = []          # (kind, method, latency_s, ok)
        self.totals = {}          # kind -> {"requests", "errors", outcome -> n}
        self.errors = []          # details of the first unexpected answers
        self.error_count = 0
        self.requests = 0         # requests to /mcp that got an answer (each should have one audit record)
        self.exceptions = 0       # requests that got no answer (connection errors, timeouts)
        self.admin = {"sighup": 0, "reload_ok": 0, "reload_failed": 0}
        self.streams_open = 0
        self.early_stream_ends = []
        self.log = open(requests_path, "w")

    def record(self, kind, method, rpc_id, status, latency, ok, outcome, detail=None):
        with self.lock:
            self.window.append((kind, method, latency, ok))
            total = self.totals.setdefault(kind, {"requests": 0, "errors": 0})
            total["requests"] += 1
            total[outcome] = total.get(outcome, 0) + 1
            if status is not None:
                self.requests += 1
            else:
                self.exceptions += 1
            if not ok:
                total["errors"] += 1
                self.error_count += 1
                if len(self.errors) < 30:
                    self.errors.append({"t": round(time.time(), 3), "kind": kind, "method": method, "status": status,
                                        "outcome": outcome, "detail": (detail or "")[:300]})
            self.log.write(json.dumps({"id": rpc_id, "kind": kind, "method": method, "status": status,
                                       "outcome": outcome}) + "\n")

    def take_window(self):
        with self.lock:
            window, self.window = self.window, []
            return window, self.requests, self.error_count


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ------------------------------------------------------------------------------------------------ HTTP
class Client:
    """One principal's keep-alive HTTPS connection to the gateway (reconnected on demand), and its MCP session."""

    def __init__(self, port, certificate=None, token=None, stats=None, kind="?"):
        self.port, self.certificate, self.token, self.stats, self.kind = port, certificate, token, stats, kind
        self.context = ssl.create_default_context(cafile=str(CERTS / "gateway-ca.pem"))
        if certificate:
            self.context.load_cert_chain(str(CERTS / f"{certificate}.pem"), str(CERTS / f"{certificate}.key"))
        self.connection = None
        self.session = None
        self.counter = 0
        self.last_used = 0.0

    def connect(self):
        self.close()
        self.connection = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=30)

    def close(self):
        if self.connection is not None:
            try:
                self.connection.close()
            except OSError:
                pass
        self.connection = None

    def next_id(self):
        self.counter += 1
        return f"{self.kind}-{self.counter}"

    def headers(self, extra=None):
        headers = dict(HEADERS)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = PROTOCOL
        headers.update(extra or {})
        return headers

    def exchange(self, method, body=None, http_method="POST", headers=None, fresh=False):
        """Sends one request; returns (status, response headers, body bytes, seconds) or raises."""
        # Like any keep-alive client, do not reuse a connection the gateway may be closing as idle
        # (limits.idle_timeout_seconds, 60 s in mcpgw.dev.json): the stream loops' control connections wait that long.
        if fresh or self.connection is None or time.monotonic() - self.last_used > IDLE_REUSE_SECONDS:
            self.connect()
        data = json.dumps(body).encode() if body is not None else None
        started = time.monotonic()
        try:
            self.connection.request(http_method, "/mcp", body=data, headers=self.headers(headers))
            response = self.connection.getresponse()
            payload = response.read()
        except Exception:
            self.close()
            raise
        elapsed = time.monotonic() - started
        self.last_used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status, response.headers, payload, elapsed

    def call(self, kind, method, params=None, check=None, notification=False, fresh=False, extra_headers=None):
        """A JSON-RPC request checked by `check(status, message, headers) -> (ok, outcome)`; records it."""
        rpc_id = None if notification else self.next_id()
        body = {"jsonrpc": "2.0", "method": method}
        if rpc_id is not None:
            body["id"] = rpc_id
        if params is not None:
            body["params"] = params
        started = time.monotonic()
        try:
            status, headers, payload, elapsed = self.exchange(method, body, headers=extra_headers, fresh=fresh)
        except Exception as error:  # noqa: BLE001 - every failure is a soak finding
            self.stats.record(kind, method, rpc_id, None, time.monotonic() - started, False, "exception",
                              f"{type(error).__name__}: {error}")
            return None, None, None
        message = parse_message(headers, payload, rpc_id)
        ok, outcome = check(status, message, headers)
        detail = None if ok else f"HTTP {status} {payload[:240]!r}"
        self.stats.record(kind, method, rpc_id, status, elapsed, ok, outcome, detail)
        return status, message, headers


def parse_message(headers, payload, rpc_id):
    """The JSON-RPC message answering `rpc_id` in a JSON or SSE body (None if there is none)."""
    kind = (headers.get("Content-Type") or "").lower()
    texts = []
    if "text/event-stream" in kind:
        for event in payload.decode(errors="replace").split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith("data:"))
            if data:
                texts.append(data)
    elif payload:
        texts.append(payload.decode(errors="replace"))
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if isinstance(message, dict) and (rpc_id is None or message.get("id") == rpc_id):
            return message
    return None


# ------------------------------------------------------------------------------------------------ checks
def error_code(message):
    return (message or {}).get("error", {}).get("code") if isinstance((message or {}).get("error"), dict) else None


def expect_result(status, message, headers):
    ok = status == 200 and isinstance(message, dict) and "result" in message and not message["result"].get("isError")
    return ok, "allowed" if ok else "unexpected"


def expect_forwarded(status, message, headers):
    """Forwarded to the upstream, which may answer with an error (a tool it does not have)."""
    ok = status == 200 and isinstance(message, dict) and ("result" in message or
                                                          (error_code(message) is not None and error_code(message) > -31000))
    return ok, "forwarded" if ok else "unexpected"


def expect_denied(status, message, headers):
    ok = status in (200, 403) and error_code(message) == DENIED
    return ok, "denied" if ok else "unexpected"


def expect_forwarded_or_limited(status, message, headers):
    if status == 429 and error_code(message) == RATE_LIMITED:
        return True, "rate_limited"
    ok, _ = expect_forwarded(status, message, headers)
    return ok, "forwarded" if ok else "unexpected"


def expect_unauthenticated(status, message, headers):
    return status == 401, "unauthenticated" if status == 401 else "unexpected"


def expect_list(forbidden):
    def check(status, message, headers):
        if status != 200 or not isinstance(message, dict) or "result" not in message:
            return False, "unexpected"
        names = {tool.get("name") for tool in message["result"].get("tools", [])}
        ok = "read_file" in names and not (names & forbidden)
        return ok, "listed" if ok else "unexpected"
    return check


def expect_initialized(status, message, headers):
    ok = status == 200 and isinstance(message, dict) and "result" in message and bool(headers.get("Mcp-Session-Id"))
    return ok, "session" if ok else "unexpected"


def expect_accepted(status, message, headers):
    return status == 202, "accepted" if status == 202 else "unexpected"


# ------------------------------------------------------------------------------------------------ loops
class Soak:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.stats = Stats(args.requests_out)
        self.tokens = {}
        self.tokens_lock = threading.Lock()
        self.scale = args.scale
        self.threads = []

    # -- helpers
    def mint(self, agent, alg):
        result = subprocess.run([self.args.mcpgw, "issue-token", "--tenant", "acme", "--agent", agent, "--alg", alg,
                                 "--scope", "tools:read", "--ttl", str(max(3600, 2 * int(self.args.seconds)))],
                                cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
        return result.stdout.strip()

    def token(self, name):
        with self.tokens_lock:
            return self.tokens[name]

    def paced(self, per_second):
        """Yields once per 1/per_second seconds until stop (no catch-up bursts after a stall)."""
        interval = 1.0 / max(0.01, per_second * self.scale)
        upcoming = time.monotonic() + random.uniform(0, interval)
        while not self.stop.is_set():
            delay = upcoming - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            yield
            upcoming += interval
            if time.monotonic() - upcoming > 1.0:
                upcoming = time.monotonic()

    def open_session(self, client, kind):
        client.session = None
        client.connect()
        status, message, headers = client.call(
            kind, "initialize",
            {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}},
            check=expect_initialized)
        if status != 200 or not headers or not headers.get("Mcp-Session-Id"):
            return False
        client.session = headers.get("Mcp-Session-Id")
        client.call(kind, "notifications/initialized", notification=True, check=expect_accepted)
        return True

    def ensure_session(self, client, kind):
        """The stateful upstream wants a session for everything it is sent: open one if the client has none."""
        if client.session is None and not self.open_session(client, kind):
            self.stop.wait(1)
            return False
        return True

    def end_session(self, client, kind):
        if not client.session:
            return
        rpc_id = None
        started = time.monotonic()
        try:
            status, _, payload, elapsed = client.exchange("DELETE", None, http_method="DELETE")
        except Exception as error:  # noqa: BLE001
            self.stats.record(kind, "DELETE", rpc_id, None, time.monotonic() - started, False, "exception", repr(error))
        else:
            ok = 200 <= status < 300
            self.stats.record(kind, "DELETE", rpc_id, status, elapsed, ok, "session_end" if ok else "unexpected",
                              None if ok else f"HTTP {status} {payload[:200]!r}")
        client.session = None

    def spawn(self, name, target, *args):
        thread = threading.Thread(target=self.guard, args=(name, target, *args), name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def guard(self, name, target, *args):
        while not self.stop.is_set():
            try:
                target(*args)
                return
            except Exception as error:  # noqa: BLE001 - a loop that breaks is a finding; restart it after a pause
                self.stats.record(name, "loop", None, None, 0.0, False, "exception",
                                  f"loop crashed: {type(error).__name__}: {error}")
                self.stop.wait(1)

    # -- the loops
    def session_calls(self, kind, certificate, token_name, rate, tools):
        client = Client(self.args.port, certificate=certificate, stats=self.stats, kind=kind)
        calls = 0
        for _ in self.paced(rate):
            if token_name:
                client.token = self.token(token_name)
            if client.session is None or calls >= 200:
                self.end_session(client, kind)
                calls = 0
                if not self.open_session(client, kind):
                    self.stop.wait(1)
                    continue
            tool, arguments = tools[calls % len(tools)]
            client.call(kind, "tools/call", {"name": tool, "arguments": arguments}, check=expect_result)
            calls += 1
        self.end_session(client, kind)
        client.close()

    def denied(self):
        acme = Client(self.args.port, certificate="acme/agents/bot1", stats=self.stats, kind="denied")
        globex = Client(self.args.port, certificate="globex/agents/bot1", stats=self.stats, kind="denied-globex")
        cases = [(acme, "delete_file", {"path": "readme.txt"}), (acme, "read_file", {"path": "../../etc/passwd"}),
                 (globex, "delete_docs", {"id": "1"})]
        for index, _ in enumerate(self.paced(5)):
            client, tool, arguments = cases[index % len(cases)]
            client.call(client.kind, "tools/call", {"name": tool, "arguments": arguments}, check=expect_denied)
        acme.close()
        globex.close()

    def burst(self):
        client = Client(self.args.port, certificate="acme/agents/bot1", stats=self.stats, kind="burst")
        while not self.stop.wait(7 / self.scale):
            if not self.ensure_session(client, "burst"):
                continue
            for n in range(8):
                client.call("burst", "tools/call", {"name": "write_report", "arguments": {"text": f"report {n}"}},
                            check=expect_forwarded_or_limited)
        self.end_session(client, "burst")
        client.close()

    def unauth(self):
        bare = Client(self.args.port, stats=self.stats, kind="unauth")
        tokens = [None, "not.a.token", "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJ4In0.c2ln"]
        for index, _ in enumerate(self.paced(4)):
            bare.token = tokens[index % len(tokens)]
            bare.call("unauth", "tools/call", {"name": "read_file", "arguments": {"path": "readme.txt"}},
                      check=expect_unauthenticated, fresh=index % 2 == 0)
        bare.close()

    def tools_list(self):
        # acme sees read_file and list_files (delete_file is denied by R3); globex's policy allows none of the
        # upstream's tools, so its filtered list is empty.
        acme = Client(self.args.port, certificate="acme/agents/bot1", stats=self.stats, kind="list")
        globex = Client(self.args.port, certificate="globex/agents/bot1", stats=self.stats, kind="list-globex")
        for index, _ in enumerate(self.paced(2)):
            client = globex if index % 2 else acme
            if not self.ensure_session(client, client.kind):
                continue
            if index % 2:
                globex.call("list-globex", "tools/list", {}, check=expect_empty_list)
            else:
                acme.call("list", "tools/list", {}, check=expect_list({"delete_file"}))
        for client in (acme, globex):
            self.end_session(client, client.kind)
            client.close()

    def globex(self):
        client = Client(self.args.port, certificate="globex/agents/bot1", stats=self.stats, kind="globex")
        for index, _ in enumerate(self.paced(8)):
            if not self.ensure_session(client, "globex"):
                continue
            client.call("globex", "tools/call", {"name": "search_docs", "arguments": {"q": f"term {index % 50}"}},
                        check=expect_forwarded)
        self.end_session(client, "globex")
        client.close()

    def churn(self):
        client = Client(self.args.port, certificate="globex/agents/bot1", stats=self.stats, kind="churn")
        for _ in self.paced(3):
            if not self.ensure_session(client, "churn"):
                continue
            client.call("churn", "tools/call", {"name": "get_status", "arguments": {}}, check=expect_forwarded,
                        fresh=True)
            client.close()
        self.end_session(client, "churn")
        client.close()

    def streams(self, kind, certificate, token_name, hold):
        control = Client(self.args.port, certificate=certificate, stats=self.stats, kind=kind)
        while not self.stop.is_set():
            if token_name:
                control.token = self.token(token_name)
            if not self.open_session(control, kind):
                self.stop.wait(1)
                continue
            self.hold_stream(kind, control, hold())
            self.end_session(control, kind)
            control.close()
            self.stop.wait(0.2)

    def hold_stream(self, kind, control, seconds):
        """GET /mcp with the session id on a connection of its own, read for `seconds`, then closed."""
        client = Client(self.args.port, certificate=control.certificate, token=control.token, stats=self.stats,
                        kind=kind)
        client.session = control.session
        client.connect()
        started = time.monotonic()
        try:
            client.connection.request("GET", "/mcp", headers=client.headers({"Accept": "text/event-stream"}))
            response = client.connection.getresponse()
        except Exception as error:  # noqa: BLE001
            self.stats.record(kind, "GET", None, None, time.monotonic() - started, False, "exception", repr(error))
            client.close()
            return
        elapsed = time.monotonic() - started
        content_type = response.headers.get("Content-Type") or ""
        ok = response.status == 200 and "text/event-stream" in content_type
        detail = None
        if not ok:
            detail = f"HTTP {response.status} {content_type} {response.read(200)!r}"
        self.stats.record(kind, "GET", None, response.status, elapsed, ok, "stream" if ok else "unexpected", detail)
        if ok:
            with self.stats.lock:
                self.stats.streams_open += 1
            deadline = time.monotonic() + seconds
            ended = None
            try:
                sock = client.connection.sock
                while not self.stop.is_set() and time.monotonic() < deadline:
                    readable, _, _ = select.select([sock], [], [], 0.5)
                    if readable and not response.read1(65536):
                        ended = "the stream ended before the client closed it"
                        break
            except (OSError, ValueError, http.client.HTTPException) as error:
                ended = f"{type(error).__name__}: {error}"
            with self.stats.lock:
                self.stats.streams_open -= 1
                if ended:
                    self.stats.early_stream_ends.append(ended)
        client.close()

    def long_stream(self):
        self.streams("long-stream", "globex/agents/bot1", None, lambda: 90.0)

    def refresh_tokens(self):
        while not self.stop.wait(120):
            try:
                fresh = {"rs256": self.mint("bot2", "RS256"), "hs256": self.mint("bot3", "HS256")}
            except (subprocess.SubprocessError, OSError) as error:
                self.stats.record("tokens", "issue-token", None, None, 0.0, False, "exception", repr(error))
                continue
            with self.tokens_lock:
                self.tokens.update(fresh)

    def admin(self, started):
        """SIGHUP at t = 30, 60, ...; POST /reload at t = 15, 45, ..."""
        next_event = 15.0
        while not self.stop.wait(max(0.0, started + next_event - time.monotonic())):
            if int(next_event) % 30 == 0:
                try:
                    os.kill(self.args.pid, signal.SIGHUP)
                    with self.stats.lock:
                        self.stats.admin["sighup"] += 1
                except OSError as error:
                    self.stats.record("sighup", "SIGHUP", None, None, 0.0, False, "exception", repr(error))
            else:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", self.args.admin_port, timeout=30)
                    connection.request("POST", "/reload")
                    response = connection.getresponse()
                    body = response.read()
                    connection.close()
                    good = response.status == 200 and json.loads(body).get("reloaded") is True
                except (OSError, ValueError, http.client.HTTPException) as error:
                    good, body = False, repr(error).encode()
                with self.stats.lock:
                    self.stats.admin["reload_ok" if good else "reload_failed"] += 1
                if not good:
                    self.stats.record("reload", "POST /reload", None, None, 0.0, False, "exception", body[:300].decode())
            next_event += 15.0

    # -- sampling
    def sample(self, started, previous):
        pid = self.args.pid
        now = time.monotonic()
        row = {"t": round(now - started, 2), "wall": time.time()}
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
            row["rss_kib"] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            row["threads"] = int(re.search(r"Threads:\s+(\d+)", status).group(1))
            row["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            row["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, AttributeError) as error:
            row["proc_error"] = repr(error)
        row["audit_records"] = self.audit_lines()
        row.update(self.metrics())
        window, requests, errors = self.stats.take_window()
        calls = [latency for kind, method, latency, ok in window if method == "tools/call" and latency is not None]
        seconds = max(1e-6, now - previous["mono"]) if previous else None
        row["requests"] = len(window)
        row["rps"] = round(len(window) / seconds, 2) if seconds else 0.0
        row["calls"] = len(calls)
        row["p50_ms"] = round(percentile(calls, 0.50) * 1000, 2) if calls else None
        row["p99_ms"] = round(percentile(calls, 0.99) * 1000, 2) if calls else None
        row["max_ms"] = round(max(calls) * 1000, 2) if calls else None
        row["errors"] = sum(1 for _, _, _, ok in window if not ok)
        row["decisions"] = requests      # cumulative: requests to /mcp that got an answer
        row["errors_total"] = errors
        row["streams_open"] = self.stats.streams_open
        if previous and "cpu_s" in row and "cpu_s" in previous:
            row["cpu_pct"] = round(100 * (row["cpu_s"] - previous["cpu_s"]) / seconds, 1)
        row["mono"] = now
        return row

    def fd_kinds(self):
        kinds = []
        for name in os.listdir(f"/proc/{self.args.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.args.pid}/fd/{name}")
            except OSError:
                continue
            kinds.append(re.sub(r":\[\d+\]$", "", target))
        return kinds

    def fd_kinds_summary(self):
        summary = {}
        try:
            for kind in self.fd_kinds():
                summary[kind] = summary.get(kind, 0) + 1
        except OSError:
            pass
        return summary

    def audit_lines(self):
        try:
            with open(self.args.audit, "rb") as audit:
                if self.audit_offset > os.fstat(audit.fileno()).st_size:
                    self.audit_offset, self.audit_count = 0, 0
                audit.seek(self.audit_offset)
                chunk = audit.read()
                self.audit_count += chunk.count(b"\n")
                self.audit_offset += len(chunk)
        except OSError:
            pass
        return self.audit_count

    def metrics(self):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.args.admin_port, timeout=10)
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
            connection.close()
        except (OSError, http.client.HTTPException):
            return {}
        values = {}

        def total(name, label=None):
            found = 0.0
            for line in text.splitlines():
                if line.startswith(name) and (line[len(name)] in " {") and (label is None or label in line):
                    try:
                        found += float(line.rsplit(" ", 1)[1])
                    except ValueError:
                        pass
            return found

        values["gw_streams"] = int(total("mcpgw_streams_in_flight"))
        values["gw_audit_queue_bytes"] = int(total("mcpgw_audit_queue_bytes"))
        values["gw_audit_records"] = int(total("mcpgw_audit_records_total"))
        values["gw_reloads_ok"] = int(total("mcpgw_reloads_total", 'result="success"'))
        values["gw_reloads_failed"] = int(total("mcpgw_reloads_total", 'result="failure"'))
        return values

    # -- the run
    def run(self):
        args = self.args
        self.audit_offset, self.audit_count = 0, 0
        self.tokens = {"rs256": self.mint("bot2", "RS256"), "hs256": self.mint("bot3", "HS256")}
        started = time.monotonic()
        rows = [self.sample(started, None)]
        rows[0]["fd_kinds"] = self.fd_kinds_summary()
        self.spawn("mtls", self.session_calls, "mtls", "acme/agents/bot1", None, 8,
                   [("read_file", {"path": "readme.txt"}), ("list_files", {})])
        self.spawn("bearer", self.session_calls, "bearer", None, "rs256", 6, [("read_file", {"path": "readme.txt"})])
        self.spawn("hs256", self.session_calls, "hs256", None, "hs256", 3, [("list_files", {})])
        self.spawn("denied", self.denied)
        self.spawn("burst", self.burst)
        self.spawn("unauth", self.unauth)
        self.spawn("list", self.tools_list)
        self.spawn("globex", self.globex)
        self.spawn("churn", self.churn)
        self.spawn("stream-1", self.streams, "stream-1", "acme/agents/bot1", None, lambda: random.uniform(2, 8))
        self.spawn("stream-2", self.streams, "stream-2", None, "rs256", lambda: random.uniform(2, 8))
        self.spawn("long-stream", self.long_stream)
        self.spawn("tokens", self.refresh_tokens)
        self.spawn("admin", self.admin, started)
        print(f"soak: {len(self.threads)} loops for {args.seconds:.0f} s, sampling every {args.interval:.0f} s",
              file=sys.stderr, flush=True)
        interrupted = False
        try:
            step = 1
            while step * args.interval <= args.seconds + 1e-6:
                delay = started + step * args.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not pathlib.Path(f"/proc/{args.pid}").exists():
                    print("soak: the gateway process is gone", file=sys.stderr)
                    break
                row = self.sample(started, rows[-1])
                rows.append(row)
                if step % max(1, int(60 / args.interval)) == 0:
                    print(f"soak: t={row['t']:.0f}s rss={row.get('rss_kib', 0) / 1024:.1f}MiB fds={row.get('fds')} "
                          f"rps={row['rps']} p99={row['p99_ms']}ms errors={row['errors_total']} "
                          f"audit={row['audit_records']}/{row['decisions']}", file=sys.stderr, flush=True)
                step += 1
        except KeyboardInterrupt:
            interrupted = True
        self.stop.set()
        deadline = time.monotonic() + 40
        for thread in self.threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        stuck = [thread.name for thread in self.threads if thread.is_alive()]
        # Let the gateway settle (client connections closed, idle upstream connections closed by the upstream),
        # then look again: what is still open beyond the start is what a leak would leave.
        settle_until = time.monotonic() + 15
        time.sleep(1.0)
        while time.monotonic() < settle_until and len(self.fd_kinds()) > rows[0].get("fds", 0):
            time.sleep(1.0)
        final = self.sample(started, rows[-1])
        final["fd_kinds"] = self.fd_kinds_summary()
        self.stats.log.close()
        out = {
            "started_wall": time.time() - (time.monotonic() - started),
            "seconds": args.seconds, "interval": args.interval, "scale": args.scale,
            "binary": args.mcpgw, "pid": args.pid, "samples": rows, "after_stop": final,
            "totals": self.stats.totals, "errors": self.stats.errors, "error_count": self.stats.error_count,
            "requests": self.stats.requests, "exceptions": self.stats.exceptions, "admin": self.stats.admin,
            "stuck_loops": stuck, "interrupted": interrupted,
            "early_stream_ends": self.stats.early_stream_ends[:50],
            "early_stream_end_count": len(self.stats.early_stream_ends),
        }
        pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"soak: done; {self.stats.requests} requests answered, {self.stats.error_count} errors"
              + (f"; loops still running: {stuck}" if stuck else ""), file=sys.stderr)


def expect_empty_list(status, message, headers):
    """globex's policy (search_*, get_*, create_ticket, convert_document, exec_sql) allows none of the upstream's
    tools (read_file, list_files, delete_file): its filtered list is empty."""
    if status != 200 or not isinstance(message, dict) or "result" not in message:
        return False, "unexpected"
    ok = message["result"].get("tools") == []
    return ok, "listed" if ok else "unexpected"


def cmd_run(args):
    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    Soak(args).run()


# ------------------------------------------------------------------------------------------------ report
def cmd_report(args):
    data = json.loads(pathlib.Path(args.samples).read_text())
    rows = [row for row in data["samples"] if "rss_kib" in row]
    sent = [json.loads(line) for line in pathlib.Path(args.requests).read_text().splitlines() if line.strip()]
    records = []
    for line in pathlib.Path(args.audit).read_text(errors="replace").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"unparsable": line[:200]})

    # The gateway's own view of the same windows: latency_ms of the tools/call records (arrival to the upstream's
    # response head, or to the refusal), so that client-side scheduling noise can be told from the gateway's.
    interval = data["interval"]
    by_step = {}
    for record in records:
        if record.get("method") != "tools/call" or "latency_ms" not in record or "time" not in record:
            continue
        when = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        by_step.setdefault(int((when - data["started_wall"]) // interval) + 1, []).append(record["latency_ms"])
    for row in rows:
        latencies = by_step.get(round(row["t"] / interval))
        row["gw_p99_ms"] = round(percentile(latencies, 0.99), 2) if latencies and row["t"] > 0 else None

    # CSV
    columns = ["t", "rss_mib", "fds", "threads", "cpu_pct", "requests", "rps", "calls", "p50_ms", "p99_ms", "max_ms",
               "gw_p99_ms",
               "errors", "errors_total", "decisions", "audit_records", "streams_open", "gw_streams",
               "gw_audit_queue_bytes", "gw_reloads_ok", "gw_reloads_failed"]
    lines = [",".join(columns)]
    for row in rows:
        row = dict(row, rss_mib=round(row["rss_kib"] / 1024, 2))
        lines.append(",".join("" if row.get(c) is None else str(row.get(c)) for c in columns))
    pathlib.Path(args.csv).write_text("\n".join(lines) + "\n")

    # audit = decisions
    answered = [r for r in sent if r["status"] is not None]
    # 401s are refused before the body is read: their records carry no JSON-RPC id (compared by count below)
    ids_sent = {r["id"] for r in answered if r["id"] is not None and r["status"] != 401}
    recorded_ids = {}
    for record in records:
        rid = record.get("jsonrpc_id")
        if rid is not None:
            recorded_ids[rid] = recorded_ids.get(rid, 0) + 1
    duplicated = sorted(rid for rid, n in recorded_ids.items() if n > 1)
    missing_ids = sorted(ids_sent - set(recorded_ids))
    # refusals before the body is read (401) carry no JSON-RPC id; compare those by count
    unknown_ids = sorted(set(recorded_ids) - {r["id"] for r in sent if r["id"] is not None})
    unauthenticated_sent = sum(1 for r in answered if r["status"] == 401)
    by_decision = {}
    for record in records:
        by_decision[record.get("decision", "?")] = by_decision.get(record.get("decision", "?"), 0) + 1
    outcomes = {}
    for r in sent:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    error_groups = {}
    for r in sent:
        if r["outcome"] in ("unexpected", "exception"):
            key = f"{r['kind']} {r['method']} {r['status'] if r['status'] is not None else 'no answer'}"
            error_groups[key] = error_groups.get(key, 0) + 1
    upstream_failures = {}
    for record in records:
        if (record.get("upstream_status") or 0) >= 500:
            reason = record.get("reason", "").split("upstream: ", 1)[-1][:80]
            key = f"{record['upstream_status']} {reason}"
            upstream_failures[key] = upstream_failures.get(key, 0) + 1

    first, last = rows[0], rows[-1]
    body = rows[1:] or rows
    rss = [row["rss_kib"] / 1024 for row in rows]
    fds = [row["fds"] for row in rows]
    threads = [row["threads"] for row in rows]
    p99 = [row["p99_ms"] for row in body if row.get("p99_ms") is not None]
    gw_p99 = [row["gw_p99_ms"] for row in body if row.get("gw_p99_ms") is not None]
    rps = [row["rps"] for row in body]
    # growth over the second half (least squares), in MiB per 10 minutes
    half = rows[len(rows) // 2:]
    slope = 0.0
    if len(half) >= 3:
        xs = [row["t"] for row in half]
        ys = [row["rss_kib"] / 1024 for row in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 600 if den else 0.0
    summary = {
        "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(data["started_wall"])),
        "duration_s": round(last["t"]),
        "binary": data["binary"],
        "requests": data["requests"], "no_answer": data["exceptions"], "errors": data["error_count"],
        "rss_mib": {"start": round(rss[0], 1), "end": round(rss[-1], 1), "max": round(max(rss), 1),
                    "slope_second_half_mib_per_10min": round(slope, 2)},
        "fds": {"start": fds[0], "end": fds[-1], "max": max(fds),
                "after_stop": data["after_stop"].get("fds"),
                "kinds_start": data["samples"][0].get("fd_kinds"), "kinds_after_stop": data["after_stop"].get("fd_kinds")},
        "threads": {"start": threads[0], "end": threads[-1], "max": max(threads)},
        "p99_ms": {"min": min(p99) if p99 else None, "median": percentile(p99, 0.5), "max": max(p99) if p99 else None},
        "gateway_p99_ms": {"min": min(gw_p99) if gw_p99 else None, "median": percentile(gw_p99, 0.5),
                           "max": max(gw_p99) if gw_p99 else None},
        "rps": {"mean": round(sum(rps) / len(rps), 1) if rps else 0, "min": min(rps) if rps else 0,
                "max": max(rps) if rps else 0},
        "audit": {"records": len(records), "requests_answered": len(answered),
                  "unauthenticated_sent": unauthenticated_sent,
                  "equal": len(records) == len(answered), "by_decision": by_decision,
                  "ids_missing": len(missing_ids), "ids_duplicated": len(duplicated), "ids_unknown": len(unknown_ids),
                  "examples_missing": missing_ids[:5], "examples_duplicated": duplicated[:5]},
        "outcomes": outcomes, "error_groups": error_groups, "upstream_failures_in_audit": upstream_failures,
        "admin": data["admin"],
        "reloads": {"ok": data["after_stop"].get("gw_reloads_ok"), "failed": data["after_stop"].get("gw_reloads_failed")},
        "stuck_loops": data["stuck_loops"], "first_errors": data["errors"][:10],
        "streams_ended_early": data.get("early_stream_end_count", 0),
    }
    pathlib.Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n")

    # PNG
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [row["t"] / 60 for row in rows]
    figure, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    axes[0].plot(t, rss, color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(0, max(rss) * 1.15)
    axes[1].plot(t, fds, color="tab:green", label="open fds")
    axes[1].plot(t, threads, color="tab:olive", linestyle="--", label="threads")
    axes[1].set_ylabel("count")
    axes[1].set_ylim(0, max(max(fds), max(threads)) * 1.25)
    axes[1].legend(loc="upper right", fontsize=8)
    tb = [row["t"] / 60 for row in body]
    axes[2].plot(tb, [row.get("p99_ms") for row in body], color="tab:red", label="p99")
    axes[2].plot(tb, [row.get("p50_ms") for row in body], color="tab:orange", label="p50")
    axes[2].plot(tb, [row.get("gw_p99_ms") for row in body], color="tab:brown", linestyle="--", linewidth=1,
                 label="p99, gateway's view (audit latency_ms)")
    axes[2].set_ylabel("tools/call latency (ms)\nclient side")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(loc="upper right", fontsize=8)
    axes[3].plot(tb, rps, color="tab:purple", label="requests/s")
    errors = [row.get("errors", 0) for row in body]
    axes[3].bar(tb, errors, width=0.06, color="black", label="errors")
    axes[3].set_ylabel("req/s, errors per 5 s")
    axes[3].set_ylim(0, max(rps + [1]) * 1.2)
    axes[3].legend(loc="lower right", fontsize=8)
    axes[3].set_xlabel("minutes")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(f"mcpgw soak {summary['date']}: {summary['duration_s']} s, {summary['requests']} requests, "
                    f"{summary['errors']} errors, audit {len(records)}/{len(answered)} "
                    f"({pathlib.Path(data['binary']).parent.name} build)", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.png, dpi=100)

    s = summary
    print(f"soak {s['date']}, {s['duration_s']} s, {s['binary']}")
    print(f"  requests {s['requests']} answered ({s['rps']['mean']} req/s mean), {s['no_answer']} without answer, "
          f"{s['errors']} errors (unexpected answers)")
    print(f"  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"  RSS MiB start {s['rss_mib']['start']} end {s['rss_mib']['end']} max {s['rss_mib']['max']} "
          f"(second half trend {s['rss_mib']['slope_second_half_mib_per_10min']:+} MiB/10 min)")
    print(f"  fds start {s['fds']['start']} end {s['fds']['end']} max {s['fds']['max']}, with the loops stopped "
          f"{s['fds']['after_stop']} ({s['fds']['kinds_after_stop']}); threads {s['threads']['start']}/{s['threads']['end']}/{s['threads']['max']}")
    print(f"  p99 ms per {data['interval']:.0f} s window: min {s['p99_ms']['min']} median {s['p99_ms']['median']} "
          f"max {s['p99_ms']['max']}; gateway's view (audit latency_ms) min {s['gateway_p99_ms']['min']} median "
          f"{s['gateway_p99_ms']['median']} max {s['gateway_p99_ms']['max']}")
    print(f"  audit records {len(records)} vs requests answered {len(answered)} "
          f"({'equal' if s['audit']['equal'] else 'DIFFERENT'}); ids missing {len(missing_ids)}, duplicated "
          f"{len(duplicated)}, unknown {len(unknown_ids)}; 401s sent {unauthenticated_sent}; by decision: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_decision.items())))
    print(f"  reloads: SIGHUP {data['admin']['sighup']}, POST /reload ok {data['admin']['reload_ok']} failed "
          f"{data['admin']['reload_failed']}; gateway counts success {s['reloads']['ok']} failure {s['reloads']['failed']}")
    if error_groups:
        print("  errors by loop, method, status: " + ", ".join(f"{k}: {v}" for k, v in sorted(error_groups.items())))
    if upstream_failures:
        print("  audit records with an upstream failure: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(upstream_failures.items())))
    if data.get("early_stream_end_count"):
        print(f"  GET streams ended before the client closed them: {data['early_stream_end_count']} "
              f"(first: {data['early_stream_ends'][:3]})")
    if data["errors"]:
        print("  first errors:")
        for error in data["errors"][:5]:
            print(f"    {error}")
    if data["stuck_loops"]:
        print(f"  loops that did not stop: {data['stuck_loops']}")
    print(f"  wrote {args.csv} ({len(rows)} rows), {args.png}, {args.summary}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config")
    config.add_argument("--work", required=True)
    config.add_argument("--port", type=int, required=True)
    config.add_argument("--upstream", required=True)
    config.add_argument("--audit-log", required=True)
    config.set_defaults(func=cmd_config)
    ports = sub.add_parser("free-port")
    ports.set_defaults(func=lambda _: print(free_port()))
    run = sub.add_parser("run")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--admin-port", type=int, required=True)
    run.add_argument("--pid", type=int, required=True)
    run.add_argument("--audit", required=True)
    run.add_argument("--mcpgw", required=True)
    run.add_argument("--seconds", type=float, default=600)
    run.add_argument("--interval", type=float, default=5)
    run.add_argument("--scale", type=float, default=2.0)
    run.add_argument("--out", required=True)
    run.add_argument("--requests-out", required=True)
    run.set_defaults(func=cmd_run)
    report = sub.add_parser("report")
    report.add_argument("--samples", required=True)
    report.add_argument("--requests", required=True)
    report.add_argument("--audit", required=True)
    report.add_argument("--csv", required=True)
    report.add_argument("--png", required=True)
    report.add_argument("--summary", required=True)
    report.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
