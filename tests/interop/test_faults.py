"""Fault injection against a real `mcpgw serve`: a misbehaving upstream for one tenant, an audit sink that fails and
recovers, a policy directory broken under load, SIGTERM and a SIGHUP storm under load.

acme's upstream is `fault_upstream.py` (its behaviour switched through its control listener); globex's upstream is
the same script in healthy mode (in `delay` mode for the SIGTERM test). For every fault the test asserts (a) what acme's client sees, within the upstream
timeout plus a margin, and that the gateway is still alive; (b) that globex's calls, made concurrently, all succeed;
(c) that the audit log holds exactly one record per request sent (matched by JSON-RPC id).

The results are summarised in docs/testing.md, "Fault injection".
"""
import http.client
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

from conftest import ROOT
from test_operations import Gateway, dev_config, free_port, metric, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = ROOT / "certs-dev"
UPSTREAM_TIMEOUT = 2  # limits.upstream_timeout_seconds (and the idle stream timeout) of the gateways here
MARGIN = 3.0  # seconds beyond the upstream timeout that a client may wait for its answer
ACME_CALL = ("read_file", {"path": "notes.txt"})  # acme: R1 allow
ACME_DENIED = ("delete_file", {"path": "notes.txt"})  # acme: R3 deny
GLOBEX_CALL = ("search_docs", {"query": "faults"})  # globex: X1 allow (globex has no R1; read_file is denied to it)
GLOBEX_DENIED = ("delete_doc", {"id": "1"})  # globex: X3 deny


# --- upstreams ----------------------------------------------------------------------------------------------------

class Upstream:
    """`fault_upstream.py` in a process of its own (its timing is not disturbed by the test's threads)."""

    def __init__(self, mode: str):
        self.process = subprocess.Popen([sys.executable, os.path.join(HERE, "fault_upstream.py"), "--mode", mode],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], 15)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError("fault_upstream did not start: " + self.process.stderr.read())
        info = json.loads(line)
        self.port, self.control = info["port"], info["control"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _control(self, method: str, path: str) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.control}{path}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_mode(self, mode: str) -> None:
        assert self._control("POST", f"/mode/{mode}")["mode"] == mode

    def reset(self) -> None:
        self._control("POST", "/reset")

    def received(self) -> int:
        return self._control("GET", "/stats")["total"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def faulty():
    upstream = Upstream("healthy")
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def healthy():
    upstream = Upstream("healthy")
    yield upstream
    upstream.stop()


# --- clients --------------------------------------------------------------------------------------------------------

_contexts: dict[str, ssl.SSLContext] = {}


def tls_context(tenant: str) -> ssl.SSLContext:
    if tenant not in _contexts:
        context = ssl.create_default_context(cafile=str(CERTS / "gateway-ca.pem"))
        context.load_cert_chain(str(CERTS / tenant / "agents" / "bot1.pem"), str(CERTS / tenant / "agents" / "bot1.key"))
        _contexts[tenant] = context
    return _contexts[tenant]


@dataclass
class Outcome:
    """What one client saw. kind: `response` (a complete HTTP response), `truncated` (a head, then the connection
    ended before the body did), `closed` (the connection ended before any response byte), `refused` (no connection),
    `timeout` (the client gave up waiting)."""
    id: str
    tenant: str
    tool: str
    kind: str = ""
    status: int | None = None
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    error: str = ""
    started: float = 0.0
    elapsed: float = 0.0

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def ok(self) -> bool:
        answer = self.json
        return (self.kind == "response" and self.status == 200 and isinstance(answer, dict) and answer.get("id") == self.id
                and "result" in answer and answer["result"].get("isError") is False)

    def denied(self, rule: str) -> bool:
        answer = self.json
        return (self.kind == "response" and self.status == 200 and isinstance(answer, dict) and answer.get("id") == self.id
                and answer.get("error", {}).get("code") == -31001 and answer["error"].get("data", {}).get("rule") == rule)

    def brief(self) -> str:
        return f"{self.id}: {self.kind} {self.status} {self.body[:160]!r} {self.error} after {self.elapsed:.2f}s"


class Client:
    """One agent's HTTPS connection (kept alive between calls unless `fresh`), with raw outcomes."""

    def __init__(self, port: int, tenant: str, timeout: float = UPSTREAM_TIMEOUT + 10, fresh: bool = False):
        self.port, self.tenant, self.timeout, self.fresh = port, tenant, timeout, fresh
        self.connection: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def call(self, id_: str, tool: str, arguments: dict) -> Outcome:
        outcome = Outcome(id=id_, tenant=self.tenant, tool=tool, started=time.time())
        payload = json.dumps({"jsonrpc": "2.0", "id": id_, "method": "tools/call",
                              "params": {"name": tool, "arguments": arguments}}).encode()
        try:
            if self.connection is None or self.fresh:
                self.close()
                self.connection = http.client.HTTPSConnection("localhost", self.port, context=tls_context(self.tenant),
                                                              timeout=self.timeout)
                try:
                    self.connection.connect()
                except OSError as error:
                    outcome.kind, outcome.error = "refused", repr(error)
                    self.close()
                    return outcome
            self.connection.request("POST", "/mcp", body=payload, headers={
                "Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
            try:
                response = self.connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError, http.client.BadStatusLine) as error:
                outcome.kind, outcome.error = "closed", repr(error)
                self.close()
                return outcome
            outcome.status = response.status
            outcome.headers = {name.lower(): value for name, value in response.getheaders()}
            try:
                outcome.body = response.read()
                outcome.kind = "response"
            except http.client.IncompleteRead as error:
                outcome.kind, outcome.body, outcome.error = "truncated", error.partial, repr(error)
            except (ConnectionError, ssl.SSLError) as error:
                outcome.kind, outcome.error = "truncated", repr(error)
            if outcome.kind != "response" or response.will_close or self.fresh:
                self.close()
        except (socket.timeout, TimeoutError) as error:
            outcome.kind, outcome.error = "timeout", repr(error)
            self.close()
        except (ConnectionError, ssl.SSLError, OSError) as error:
            outcome.kind, outcome.error = "closed", repr(error)
            self.close()
        finally:
            outcome.elapsed = time.time() - outcome.started
        return outcome


def concurrent_calls(port: int, tenant: str, prefix: str, count: int, tool: str, arguments: dict,
                     timeout: float = UPSTREAM_TIMEOUT + 10) -> list[Outcome]:
    """`count` calls at once, each on a connection of its own."""
    results: list = [None] * count

    def one(index: int) -> None:
        client = Client(port, tenant, timeout=timeout, fresh=True)
        results[index] = client.call(f"{prefix}/{index}", tool, arguments)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout + 10)
    assert all(results), f"a client thread did not finish: {results}"
    return results


class Load:
    """Threads that loop calls until stopped: each thread cycles through `calls` ((tool, arguments) pairs), pausing
    `pace` seconds between calls. With `stop_on_refused`, a thread ends when the listener refuses it."""

    def __init__(self, port: int, tenant: str, prefix: str, calls: list, threads: int = 2, pace: float = 0.01,
                 fresh: bool = False, stop_on_refused: bool = False):
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(port, tenant, f"{prefix}/{index}", calls, pace, fresh,
                                                                  stop_on_refused), daemon=True)
                        for index in range(threads)]

    def _loop(self, port, tenant, prefix, calls, pace, fresh, stop_on_refused) -> None:
        client = Client(port, tenant, fresh=fresh)
        number = 0
        while not self.stopping.is_set():
            tool, arguments = calls[number % len(calls)]
            outcome = client.call(f"{prefix}/{number}", tool, arguments)
            number += 1
            with self.lock:
                self.outcomes.append(outcome)
            if stop_on_refused and outcome.kind == "refused":
                break
            self.stopping.wait(pace)
        client.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=UPSTREAM_TIMEOUT + 20)
        assert not any(thread.is_alive() for thread in self.threads), "a load thread hangs"
        return self.outcomes

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)


# --- gateways and audit -------------------------------------------------------------------------------------------

def start_gateway(tmp_path, acme_url: str, globex_url: str, audit_path, **limits) -> Gateway:
    config = dev_config(tmp_path)
    config["limits"].update({"upstream_timeout_seconds": UPSTREAM_TIMEOUT,
                             "upstream_idle_stream_timeout_seconds": UPSTREAM_TIMEOUT, "shutdown_grace_seconds": 1})
    config["limits"].update(limits)
    config["tenants"]["acme"]["upstream"] = {"url": acme_url}
    config["tenants"]["globex"]["upstream"] = {"url": globex_url}
    path = write_config(tmp_path, config)
    return Gateway("--config", path, "--listen", "127.0.0.1:0", "--audit-log", str(audit_path), admin_port=free_port())


def stop_gateway(gateway: Gateway, timeout: float = 30) -> tuple[int, float]:
    """SIGTERM; (exit status, seconds to exit)."""
    started = time.time()
    status = gateway.stop()
    return status, time.time() - started


def audit_records(path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


def by_id(records: list[dict]) -> dict:
    """jsonrpc_id → its records."""
    found: dict = {}
    for record in records:
        found.setdefault(record.get("jsonrpc_id"), []).append(record)
    return found


def assert_one_record_per_request(records: list[dict], outcomes: list[Outcome]) -> None:
    """(c): as many records as requests sent, exactly one per request id, and nothing else."""
    sent = [outcome.id for outcome in outcomes]
    assert len(set(sent)) == len(sent)
    found = by_id(records)
    missing = [id_ for id_ in sent if id_ not in found]
    doubled = {id_: len(found[id_]) for id_ in sent if len(found.get(id_, [])) > 1}
    strangers = [record for record in records if record.get("jsonrpc_id") not in set(sent)]
    assert not missing and not doubled and not strangers, (
        f"{len(records)} records for {len(sent)} requests; missing: {missing[:5]}, doubled: {doubled}, "
        f"records of no request sent: {strangers[:3]}")


def readiness(gateway: Gateway) -> dict:
    status, body, _ = gateway.admin("GET", "/readyz")
    answer = json.loads(body)
    answer["status"] = status
    return answer


def wait_until(predicate, timeout: float):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(0.05)


# --- (a) (b) (c) for each upstream fault ---------------------------------------------------------------------------

# mode → what acme's client must see
FAULTS = {
    "refuse": {"status": 502},
    "garbage": {"status": 502},
    "huge_headers": {"status": 502},
    "stall": {"status": 504, "waits": True},
    "slow": {"status": 504, "waits": True},
    "reset_body": {"truncated": "application/json"},
    "reset_sse": {"truncated": "text/event-stream"},
}
ACME_CALLS = 4


@pytest.mark.parametrize("mode", list(FAULTS))
def test_upstream_fault_is_contained(mode, faulty, healthy, tmp_path):
    expected = FAULTS[mode]
    faulty.set_mode(mode)
    faulty.reset()
    healthy.reset()
    audit = tmp_path / "audit.log"
    gateway = start_gateway(tmp_path, faulty.url, healthy.url, audit)
    try:
        with Load(gateway.port, "globex", f"{mode}/globex", [GLOBEX_CALL], threads=2, pace=0.02) as load:
            wait_until(lambda: load.count() >= 4, 5)
            acme = concurrent_calls(gateway.port, "acme", f"{mode}/acme", ACME_CALLS, *ACME_CALL)
            time.sleep(0.2)
        globex = load.outcomes
        assert gateway.process.poll() is None, f"the gateway died during {mode}:\n{gateway.stderr}"
        ready_during = readiness(gateway)

        # The gateway serves acme again as soon as its upstream does (no connection left broken in the pool).
        faulty.set_mode("healthy")
        after = Client(gateway.port, "acme").call(f"{mode}/acme/after", *ACME_CALL)
        ready_after = readiness(gateway)
    finally:
        status, _ = stop_gateway(gateway)
    received = faulty.received()
    records = audit_records(audit)

    print(f"{mode}: acme {[(o.kind, o.status, round(o.elapsed, 2), o.body[:100]) for o in acme]}; "
          f"globex {len(globex)} calls, slowest {max(o.elapsed for o in globex):.3f}s; {len(records)} records; "
          f"acme record: {by_id(records).get(acme[0].id)}; upstream received {received}")
    # (a) acme's client: a clean, bounded answer.
    for outcome in acme:
        assert outcome.elapsed < UPSTREAM_TIMEOUT + MARGIN, f"{mode}: waited too long: {outcome.brief()}"
        if "status" in expected:
            answer = outcome.json
            assert outcome.kind == "response" and outcome.status == expected["status"], f"{mode}: {outcome.brief()}"
            assert outcome.headers.get("content-type", "").startswith("application/json"), outcome.headers
            assert answer["jsonrpc"] == "2.0" and answer["id"] == outcome.id, answer
            assert answer["error"]["code"] == -31004 and isinstance(answer["error"]["message"], str), answer
            assert "result" not in answer and "127.0.0.1" not in outcome.body.decode(), answer
            if expected.get("waits"):
                assert outcome.elapsed >= UPSTREAM_TIMEOUT - 0.2, f"{mode}: answered before the timeout: {outcome.brief()}"
        else:
            # The upstream's head was relayed before it broke: the status cannot change any more, the connection
            # is closed before the body (or the chunked stream) is complete.
            assert outcome.kind == "truncated" and outcome.status == 200, f"{mode}: {outcome.brief()}"
            assert outcome.headers.get("content-type", "").startswith(expected["truncated"]), outcome.headers
            if expected["truncated"] == "application/json":
                assert int(outcome.headers["content-length"]) > len(outcome.body) > 0, outcome.brief()
                assert outcome.json is None, f"a truncated body must not parse: {outcome.brief()}"
            else:
                assert outcome.headers.get("transfer-encoding") == "chunked", outcome.headers
                # Exactly the one event, whole; then the stream ends without its last chunk.
                assert outcome.body.startswith(b"event: message\ndata: ") and outcome.body.endswith(b"\n\n"), outcome.brief()
                assert outcome.body.count(b"data:") == 1 and b"notifications/message" in outcome.body, outcome.brief()
    assert after.ok(), f"acme after the upstream recovered: {after.brief()}\n{gateway.stderr}"
    assert status == 0, f"exit status {status} after {mode}:\n{gateway.stderr}"
    # Readiness: an upstream that refuses connections is listed, while globex's upstream still serves, and the
    # gateway stays ready (one tenant's upstream never takes it out). An upstream that was reached, however badly it
    # answered, is not unreachable: a slow call or a broken answer says nothing of the others'.
    unreachable = ["acme"] if mode == "refuse" else []
    assert ready_during["status"] == 200 and ready_during["checks"]["upstreams_failing"] == unreachable, ready_during
    assert ready_after["status"] == 200 and ready_after["checks"]["upstreams_failing"] == [], ready_after
    # The upstream saw each call once (none for a closed port), and the call after recovery.
    assert received == (1 if mode == "refuse" else ACME_CALLS + 1), received

    # (b) globex, concurrently: every call answered, and not slowed down by acme's upstream.
    window = (min(outcome.started for outcome in acme), max(outcome.started + outcome.elapsed for outcome in acme))
    overlapping = [outcome for outcome in globex if outcome.started < window[1] and outcome.started + outcome.elapsed > window[0]]
    # A fault that holds acme's calls (timeouts, cut responses) must overlap many globex calls; one answered at once
    # (502 in milliseconds) at least has globex calls on both sides of it.
    assert len(overlapping) >= (20 if expected.get("waits") else 5 if "truncated" in expected else 0), (len(overlapping), window)
    assert any(o.started < window[0] for o in globex) and any(o.started > window[1] for o in globex), window
    failed = [outcome.brief() for outcome in globex if not outcome.ok()]
    assert not failed, f"globex calls failed during {mode}: {failed[:5]}"
    slowest = max(outcome.elapsed for outcome in globex)
    assert slowest < 2.0, f"globex slowed to {slowest:.2f}s during {mode}"

    # (c) one record per request; acme's say what the upstream did.
    assert_one_record_per_request(records, acme + globex + [after])
    found = by_id(records)
    for outcome in acme:
        record = found[outcome.id][0]
        assert record["tenant"] == "acme" and record["decision"] == "allow" and record["rule"] == "R1", record
        if "status" in expected:
            assert record.get("upstream_status") == expected["status"], record
            assert "upstream:" in record["reason"], record
        else:
            # Written when the answer ended: it says the answer was cut short, with the status it began with.
            assert record.get("upstream_status") == 200, record
            assert "not completed: the upstream failed during its answer" in record["reason"], record
    for outcome in globex:
        record = found[outcome.id][0]
        assert record["tenant"] == "globex" and record["decision"] == "allow" and record.get("upstream_status") == 200, record


# --- the audit sink: full, unwritable, recovering -------------------------------------------------------------------

def retarget(link, target) -> None:
    """Points the symlink `link` at `target` atomically (rename over it)."""
    temporary = link.with_name(link.name + ".new")
    if temporary.is_symlink() or temporary.exists():
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


def test_audit_sink_full_then_unwritable_then_recovering(healthy, tmp_path):
    """--audit-log is a symlink: /dev/full (every write fails with ENOSPC), then a directory (cannot be reopened), then
    a real file; each switch is followed by POST /reload (which reopens the audit file by its path)."""
    healthy.reset()
    link = tmp_path / "audit.log"
    os.symlink("/dev/full", link)
    unwritable = tmp_path / "a-directory"
    unwritable.mkdir()
    recovered = tmp_path / "recovered.log"
    gateway = start_gateway(tmp_path, healthy.url, healthy.url, link)
    outcomes: list[Outcome] = []
    try:
        acme, globex = Client(gateway.port, "acme"), Client(gateway.port, "globex")
        # 1. The first calls are forwarded: nothing has failed yet. Their records wait for the sink; the first
        #    failed write makes the log refuse, and from then on every call gets 503.
        for number in range(20):
            outcome = acme.call(f"full/acme/{number}", *ACME_CALL)
            outcomes.append(outcome)
            if outcome.status == 503:
                break
            assert outcome.ok(), outcome.brief()
            time.sleep(0.05)
        assert outcomes[-1].status == 503, [outcome.brief() for outcome in outcomes]
        forwarded_before = healthy.received()
        assert forwarded_before == len(outcomes) - 1
        not_ready = readiness(gateway)
        assert not_ready["status"] == 503 and not_ready["checks"]["audit_writable"] is False, not_ready
        samples = gateway.metrics()
        assert metric(samples, "mcpgw_audit_accepting") == 0
        assert metric(samples, "mcpgw_audit_write_errors_total") >= 1

        refused = []
        for number in range(3):
            refused.append(acme.call(f"full/acme/refused/{number}", *ACME_CALL))
            refused.append(acme.call(f"full/acme/refused-deny/{number}", *ACME_DENIED))
            refused.append(globex.call(f"full/globex/refused/{number}", *GLOBEX_CALL))
        # 2. Unwritable: the link now names a directory; the reload cannot reopen it and says so.
        retarget(link, unwritable)
        status, body, _ = gateway.admin("POST", "/reload")
        report = json.loads(body)
        assert status == 500 and report["parts"]["audit_log"]["ok"] is False, body
        assert "not reopened" in report["parts"]["audit_log"]["detail"], body
        for part in ("policies", "identity", "tls"):
            assert report["parts"][part]["ok"] is True, body
        for number in range(2):
            refused.append(acme.call(f"unwritable/acme/{number}", *ACME_CALL))
            refused.append(globex.call(f"unwritable/globex/{number}", *GLOBEX_CALL))
        outcomes += refused
        for outcome in [outcomes[len(outcomes) - len(refused) - 1]] + refused:
            answer = outcome.json
            assert outcome.kind == "response" and outcome.status == 503, outcome.brief()
            assert answer["error"]["code"] == -31005 and answer["error"]["message"], answer
        assert healthy.received() == forwarded_before, "a call was forwarded while the audit log refused records"

        # 3. Recovering: the link names a real file; the reload reopens it, the held records are written there and
        #    the log accepts records again.
        retarget(link, recovered)
        status, body, _ = gateway.admin("POST", "/reload")
        report = json.loads(body)
        assert status == 200 and report["parts"]["audit_log"] == {"ok": True, "detail": "reopened"}, body
        assert wait_until(lambda: readiness(gateway)["status"] == 200, 5), readiness(gateway)
        for number in range(5):
            outcomes.append(acme.call(f"recovered/acme/{number}", *ACME_CALL))
            outcomes.append(globex.call(f"recovered/globex/{number}", *GLOBEX_CALL))
        late = [outcome.brief() for outcome in outcomes[-10:] if not outcome.ok()]
        assert not late, late
    finally:
        exit_status, _ = stop_gateway(gateway)
    assert exit_status == 0, gateway.stderr
    assert gateway.process.returncode == 0
    assert sum("audit log write failed; refusing requests" in line for line in gateway.lines) == 1, gateway.stderr
    assert sum("audit log writes succeed again" in line for line in gateway.lines) == 1, gateway.stderr

    answered = [outcome for outcome in outcomes if outcome.status == 200]
    refused = [outcome for outcome in outcomes if outcome.status == 503]
    print(f"audit sink: {len(answered)} answered 200, {len(refused)} refused 503; "
          f"{len(audit_records(recovered))} records in the recovered file")
    assert len(answered) + len(refused) == len(outcomes)
    # Every call that was forwarded has its one record (the ones from the outage held and written to the new file);
    # a refused call was never acted on and has none of its own: one summary record tells how many were refused.
    records = audit_records(recovered)
    summaries = [record for record in records if record.get("rule") == "audit_unavailable"]
    assert len(summaries) == 1, summaries
    assert summaries[0]["reason"].startswith(f"{len(refused)} request(s) refused (or connection events not recorded) from "), (
        summaries, len(refused))
    assert_one_record_per_request([record for record in records if record not in summaries], answered)
    assert healthy.received() == len(answered)


def test_audit_unavailable_refusals_answer_the_request_and_are_counted(healthy, tmp_path):
    """The 503/-31005 refusals cannot be in the audit log (it refuses records). JSON-RPC 2.0: an error answers the
    id of the request it is for (null only when the id could not be read). docs/metrics.md: mcpgw_refusals_total
    counts the requests the gateway refused itself, "audit log unavailable" among them."""
    link = tmp_path / "audit.log"
    os.symlink("/dev/full", link)
    gateway = start_gateway(tmp_path, healthy.url, healthy.url, link)
    outcomes: list[Outcome] = []
    try:
        acme, globex = Client(gateway.port, "acme"), Client(gateway.port, "globex")
        assert acme.call("count/acme/first", *ACME_CALL).ok()  # forwarded: nothing has failed yet
        assert wait_until(lambda: readiness(gateway)["checks"]["audit_writable"] is False, 5), readiness(gateway)
        for number in range(2):
            outcomes.append(acme.call(f"count/acme/{number}", *ACME_CALL))
            outcomes.append(acme.call(f"count/acme-deny/{number}", *ACME_DENIED))
            outcomes.append(globex.call(f"count/globex/{number}", *GLOBEX_CALL))
        samples = gateway.metrics()
        # Let the sink recover before SIGTERM: a log that still fails is retried for 10 s at exit.
        retarget(link, tmp_path / "recovered.log")
        assert gateway.admin("POST", "/reload")[0] == 200
    finally:
        stop_gateway(gateway)
    print("audit unavailable: " + "; ".join(outcome.brief() for outcome in outcomes))
    assert all(outcome.status == 503 and outcome.json["error"]["code"] == -31005 for outcome in outcomes), \
        [outcome.brief() for outcome in outcomes]
    problems = []
    wrong_ids = [(outcome.id, outcome.json.get("id")) for outcome in outcomes if outcome.json.get("id") != outcome.id]
    if wrong_ids:
        problems.append(f"(request id, answered id) of the 503/-31005 answers: {wrong_ids}")
    counted = {dict(labels).get("tenant"): value for (name, labels), value in samples.items()
               if name == "mcpgw_refusals_total" and ("reason", "audit_unavailable") in labels}
    if sum(counted.values()) != len(outcomes):
        problems.append(
            f"{len(outcomes)} requests refused with 503/-31005 (2 allowed and 2 denied acme calls, 2 allowed globex "
            f"calls); mcpgw_refusals_total{{reason=\"audit_unavailable\"}} by tenant: {counted}")
    assert not problems, "\n".join(problems)


# --- a policy directory broken under load ----------------------------------------------------------------------------

def test_broken_policy_reload_under_load_keeps_the_previous_policies(healthy, tmp_path):
    audit = tmp_path / "audit.log"
    gateway = start_gateway(tmp_path, healthy.url, healthy.url, audit)
    policy = tmp_path / "policies" / "acme" / "production.json"
    original = policy.read_text()
    replies = []
    try:
        with Load(gateway.port, "acme", "policy/acme", [ACME_CALL, ACME_DENIED], threads=1, pace=0.03) as acme, \
                Load(gateway.port, "globex", "policy/globex", [GLOBEX_CALL, GLOBEX_DENIED], threads=2, pace=0.02) as globex:
            time.sleep(0.5)
            policy.write_text('{"name": "production", "rules": [ {"id": "R1",, }\n')  # not JSON
            gateway.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            replies.append(gateway.admin("POST", "/reload"))
            document = json.loads(original)
            document["rules"][1]["tool"] = document["rules"][1].pop("tools")  # an unknown key in rule R2
            policy.write_text(json.dumps(document))
            gateway.process.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            policy.write_text(original)
            replies.append(gateway.admin("POST", "/reload"))
            time.sleep(0.5)
        outcomes = acme.outcomes + globex.outcomes
        assert gateway.process.poll() is None, gateway.stderr
    finally:
        exit_status, _ = stop_gateway(gateway)
    assert exit_status == 0, gateway.stderr
    broken, restored = replies
    print(f"policy reload: {len(outcomes)} calls, {len(audit_records(audit))} records, replies {[r[0] for r in replies]}")
    assert broken[0] == 500, broken
    report = json.loads(broken[1])
    assert report["parts"]["policies"]["ok"] is False and "not valid JSON" in report["parts"]["policies"]["detail"], report
    assert restored[0] == 200 and json.loads(restored[1])["reloaded"] is True, restored
    refusals = [line for line in gateway.lines if "policy reload refused; the previous policies stay in force" in line]
    assert len(refusals) == 3, refusals  # SIGHUP (syntax), POST /reload (syntax), SIGHUP (unknown key)
    assert any("rules[1].tool: unknown key" in line for line in refusals), refusals

    # Every call was decided by the policies in force (the previous ones while the files were broken).
    wrong = [outcome.brief() for outcome in outcomes
             if not (outcome.ok() if outcome.tool in (ACME_CALL[0], GLOBEX_CALL[0])
                     else outcome.denied("R3" if outcome.tenant == "acme" else "X3"))]
    assert len(outcomes) > 50 and not wrong, wrong[:5]
    records = audit_records(audit)
    assert_one_record_per_request(records, outcomes)
    found = by_id(records)
    for outcome in outcomes:
        record = found[outcome.id][0]
        allowed = outcome.tool in (ACME_CALL[0], GLOBEX_CALL[0])
        assert record["decision"] == ("allow" if allowed else "deny"), record


# --- SIGTERM with calls stalled upstream, calls about to be answered, and another tenant's load ----------------------

def test_sigterm_with_stalled_and_in_flight_calls_under_load(faulty, tmp_path):
    """SIGTERM (shutdown grace 1 s, upstream timeout 10 s) while: 6 acme calls stall at acme's upstream (never
    answered: cut at the end of the grace); 6 globex calls wait at globex's upstream, which answers each 0.5 s after
    it arrived (within the grace: they must finish); and globex agents loop calls (allowed and denied, kept-alive and
    fresh connections)."""
    faulty.set_mode("stall")
    faulty.reset()
    delayed = Upstream("delay")
    audit = tmp_path / "audit.log"
    stalled: list = []
    held: list = []
    try:
        gateway = start_gateway(tmp_path, faulty.url, delayed.url, audit, upstream_timeout_seconds=10)
        try:
            keep_alive = Load(gateway.port, "globex", "term/globex", [GLOBEX_CALL, GLOBEX_DENIED], threads=2, pace=0.01,
                              stop_on_refused=True)
            fresh = Load(gateway.port, "globex", "term/globex-fresh", [GLOBEX_DENIED, GLOBEX_CALL], threads=1,
                         pace=0.01, fresh=True, stop_on_refused=True)
            keep_alive.__enter__()
            fresh.__enter__()
            time.sleep(0.6)
            threads = [
                threading.Thread(target=lambda: stalled.extend(
                    concurrent_calls(gateway.port, "acme", "term/acme", 6, *ACME_CALL, timeout=20))),
                threading.Thread(target=lambda: held.extend(
                    concurrent_calls(gateway.port, "globex", "term/globex-held", 6, *GLOBEX_CALL, timeout=20)))]
            for thread in threads:
                thread.start()
            held_ids = {f"term/globex-held/{index}" for index in range(6)}
            arrived = lambda: faulty.received() == 6 and held_ids <= set(delayed._control("GET", "/stats")["ids"])  # noqa: E731
            assert wait_until(arrived, 10), (faulty.received(), delayed._control("GET", "/stats"))
            signalled = time.time()
            gateway.process.send_signal(signal.SIGTERM)
            gateway.process.wait(timeout=15)
            exited = time.time() - signalled
            for thread in threads:
                thread.join(timeout=15)
            keep_alive.stop()
            fresh.stop()
        finally:
            exit_status, _ = stop_gateway(gateway)
    finally:
        delayed.stop()
    loops = keep_alive.outcomes + fresh.outcomes
    records = audit_records(audit)
    found = by_id(records)
    print(f"sigterm: exit {exit_status} after {exited:.2f}s; acme stalled {[(o.kind, round(o.started + o.elapsed - signalled, 2)) for o in stalled]}; "
          f"globex held {[(o.kind, o.status, round(o.started + o.elapsed - signalled, 2)) for o in held]}; "
          f"loops {sum(o.kind == 'response' for o in loops)} answered, not answered: "
          f"{[(o.brief(), [(r['decision'], r.get('upstream_status'), r['reason']) for r in found.get(o.id, [])]) for o in loops if o.kind != 'response']}; "
          f"{len(records)} records")
    assert exit_status == 0, gateway.stderr
    assert exited < 1 + MARGIN, f"exit took {exited:.1f}s with a 1 s grace"
    assert "audit log closed with" not in gateway.stderr, gateway.stderr

    # Audit: one record per request that reached the gateway, none twice, none for a request not sent.
    sent = {outcome.id for outcome in stalled + held + loops}
    assert all(record.get("jsonrpc_id") in sent for record in records), "a record for a request not sent"
    assert all(len(entries) == 1 for entries in found.values()), "a request recorded twice"
    assert all(outcome.id in found for outcome in stalled + held), "a call in flight at SIGTERM without its record"
    assert all(outcome.id in found for outcome in loops if outcome.kind == "response"), "an answered call without its record"

    # acme's stalled calls: cut at the end of the grace, with no response byte (never a partial one), recorded as
    # cut by the shutdown.
    assert len(stalled) == 6 and len(held) == 6
    for outcome in stalled:
        assert outcome.kind == "closed" and outcome.elapsed < 20, outcome.brief()
        assert outcome.started + outcome.elapsed >= signalled + 0.9, f"cut before the grace ended: {outcome.brief()}"
        (record,) = found[outcome.id]
        assert record["decision"] == "allow" and record.get("upstream_status") is None, record
        assert "not completed: the gateway shut down" in record["reason"], record
    # globex's loops: nothing failed before SIGTERM; no partial response ever.
    assert sum(outcome.kind == "response" for outcome in loops) >= 4
    for outcome in loops:
        if outcome.kind == "response":
            assert outcome.ok() if outcome.tool == GLOBEX_CALL[0] else outcome.denied("X3"), outcome.brief()
        else:
            assert outcome.kind in ("closed", "refused"), outcome.brief()
            assert outcome.started + outcome.elapsed >= signalled, f"failed before SIGTERM: {outcome.brief()}"

    # Requests in flight finish within the grace: a call the gateway decided, and (for an allowed one) forwarded and
    # got its upstream's answer for, reaches its client. (Checked last: the failure message lists every such call.)
    lost = [(outcome.brief(), found[outcome.id][0]["decision"], found[outcome.id][0].get("upstream_status"),
             found[outcome.id][0]["reason"])
            for outcome in held + loops
            if outcome.id in found and "shut down" not in found[outcome.id][0]["reason"] and outcome.kind != "response"]
    assert not lost, f"decided (and answered upstream) during the grace, but the client got no response: {lost}"
    assert all(outcome.ok() for outcome in held), [outcome.brief() for outcome in held]


# --- a SIGHUP storm under load -------------------------------------------------------------------------------------------

def test_sighup_storm_under_load(healthy, tmp_path):
    audit = tmp_path / "audit.log"
    gateway = start_gateway(tmp_path, healthy.url, healthy.url, audit)
    try:
        before = gateway.metrics()
        # acme stays under its tenant rate limit (L2: 50/s); globex has none on search_*.
        with Load(gateway.port, "acme", "hup/acme", [ACME_CALL, ACME_DENIED], threads=1, pace=0.03) as acme, \
                Load(gateway.port, "globex", "hup/globex", [GLOBEX_CALL], threads=2, pace=0.01) as globex, \
                Load(gateway.port, "globex", "hup/globex-fresh", [GLOBEX_CALL], threads=1, pace=0.01, fresh=True) as fresh:
            time.sleep(0.3)
            for _ in range(50):
                gateway.process.send_signal(signal.SIGHUP)
                time.sleep(0.04)
            time.sleep(0.5)
        outcomes = acme.outcomes + globex.outcomes + fresh.outcomes
        assert gateway.process.poll() is None, gateway.stderr
        after = wait_until(lambda: (lambda samples: samples if metric(samples, "mcpgw_reloads_total", result="success")
                                    - metric(before, "mcpgw_reloads_total", result="success") >= 50 else None)(
            gateway.metrics()), 5) or gateway.metrics()
    finally:
        exit_status, _ = stop_gateway(gateway)
    assert exit_status == 0, gateway.stderr
    failed = [outcome.brief() for outcome in outcomes
              if not (outcome.ok() if outcome.tool in (ACME_CALL[0], GLOBEX_CALL[0]) else outcome.denied("R3"))]
    assert len(outcomes) > 100 and not failed, (len(outcomes), failed[:5])
    reloads = metric(after, "mcpgw_reloads_total", result="success") - metric(before, "mcpgw_reloads_total", result="success")
    print(f"sighup storm: {len(outcomes)} calls, {reloads} reloads, {len(audit_records(audit))} records")
    failures = metric(after, "mcpgw_reloads_total", result="failure") - metric(before, "mcpgw_reloads_total", result="failure")
    assert failures == 0 and 1 <= reloads <= 50, (reloads, failures)
    assert not [line for line in gateway.lines if "refused" in line and "reload" in line], gateway.stderr
    assert_one_record_per_request(audit_records(audit), outcomes)
