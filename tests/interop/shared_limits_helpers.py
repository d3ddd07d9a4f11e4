"""Helpers of test_shared_limits.py: a redis-server that can be killed and restarted on the same port, gateway
configurations with a `redis` section and a policy directory of their own, and a load that alternates every thread's
calls between two replicas over keep-alive connections, keeping what each call got."""
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from test_faults import Client, Outcome
from test_operations import Gateway, dev_config, free_port, write_config

TOOL = ("read_file", {"path": "notes.txt"})  # allowed by the policy below (R1)


# --- redis-server ---------------------------------------------------------------------------------------------------

class RedisServer:
    """`redis-server` on 127.0.0.1:PORT with no persistence (a restart starts empty, as after losing the server).
    `kill()` is SIGKILL (no goodbye to the clients); `start()` again reuses the port."""

    READY = "Ready to accept connections"

    def __init__(self, folder, port: int | None = None):
        self.folder = str(folder)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> "RedisServer":
        assert self.process is None or self.process.poll() is not None, "redis-server is already running"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.folder, "--daemonize", "no"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()
        threading.Thread(target=self._drain, args=(self.process, ready), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"redis-server did not start on 127.0.0.1:{self.port} within {timeout} s:\n"
                                     + "".join(self.log[-20:]))
        return self

    def _drain(self, process: subprocess.Popen, ready: threading.Event) -> None:
        """Keeps its output (the pipe never fills); `ready` once it accepts connections."""
        for line in process.stdout:
            self.log.append(line)
            if self.READY in line:
                ready.set()

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone (its listening socket closed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()


# --- configuration --------------------------------------------------------------------------------------------------

def write_policies(folder, limit: dict) -> str:
    """A policy directory of one document for acme: read_file allowed, everything else denied, and `limit`."""
    policies = folder / "policies"
    (policies / "acme").mkdir(parents=True, exist_ok=True)
    (policies / "acme" / "shared.json").write_text(json.dumps({
        "name": "shared-limits-test", "default_action": "deny",
        "rules": [{"id": "R1", "action": "allow", "tools": ["read_file"]}],
        "rate_limits": [limit]}, indent=2))
    return str(policies)


def gateway_config(folder, name: str, upstream_url: str, policies: str, redis: dict | None = None,
                   acme_failure_mode: str | None = None) -> str:
    """mcpgw.dev.json (absolute paths) with acme only (the policies are acme's), `policies`, acme's upstream at
    `upstream_url`, and `redis`."""
    config = dev_config(folder)
    del config["tenants"]["globex"]
    config["policies"] = policies
    config["limits"].update({"upstream_timeout_seconds": 5, "shutdown_grace_seconds": 2})
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": upstream_url}
    if redis is not None:
        config["redis"] = redis
    if acme_failure_mode:
        config["tenants"]["acme"]["redis_failure_mode"] = acme_failure_mode
    return write_config(folder, config, f"{name}.json")


def start_replica(folder, name: str, config: str) -> tuple[Gateway, object]:
    """`mcpgw serve --config CONFIG` on a free port with its own audit log; (gateway, audit path)."""
    audit = folder / f"{name}-audit.jsonl"
    gateway = Gateway("--config", config, "--listen", "127.0.0.1:0", "--audit-log", str(audit))
    gateway.name = name
    return gateway, audit


# --- audit ------------------------------------------------------------------------------------------------------

def audit_records(*paths) -> list[dict]:
    records = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as lines:
                records += [json.loads(line) for line in lines if line.strip()]
    return records


class AuditTail:
    """Reads the records appended to audit logs while the gateways run (a line still being written is left for the
    next read)."""

    def __init__(self, *paths):
        self.offsets = {str(path): 0 for path in paths}
        self.records: list[dict] = []
        self.by_id: dict = {}

    def poll(self) -> list[dict]:
        for path, offset in self.offsets.items():
            if not os.path.exists(path):
                continue
            with open(path, "rb") as file:
                file.seek(offset)
                data = file.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.offsets[path] = offset + len(complete)
            for line in complete.splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.records.append(record)
                    self.by_id[record.get("jsonrpc_id")] = record
        return self.records


# --- outcomes ---------------------------------------------------------------------------------------------------

def error_code(outcome: Outcome):
    answer = outcome.json
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return answer["error"].get("code")
    return None




def kind(outcome: Outcome) -> str:
    """admitted (200 with the upstream's result), limited (429, -31002), unavailable (503, -31007) or other."""
    if outcome.ok():
        return "admitted"
    if outcome.kind == "response" and outcome.status == 429 and error_code(outcome) == -31002:
        return "limited"
    if outcome.kind == "response" and outcome.status == 503 and error_code(outcome) == -31007:
        return "unavailable"
    return "other"


@dataclass
class Sent:
    """One call: which replica, when it was sent and answered (time.time()), what came back."""
    replica: str
    outcome: Outcome
    sent: float
    answered: float

    @property
    def kind(self) -> str:
        return kind(self.outcome)


class AlternatingLoad:
    """`threads` threads, each with one keep-alive connection to every replica, sending acme bot1's read_file calls
    to the replicas in turn until stopped (`pace` seconds between a thread's calls). Ids are PREFIX/THREAD/N."""

    def __init__(self, replicas: dict[str, int], prefix: str, threads: int = 4, pace: float = 0.0):
        self.replicas = replicas
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(f"{prefix}/{index}", index, pace), daemon=True)
                        for index in range(threads)]
        self.started = self.stopped = 0.0

    def _loop(self, prefix: str, offset: int, pace: float) -> None:
        names = list(self.replicas)
        clients = {name: Client(port, "acme", timeout=15) for name, port in self.replicas.items()}
        number = 0
        try:
            while not self.stopping.is_set():
                name = names[(number + offset) % len(names)]
                sent = time.time()
                outcome = clients[name].call(f"{prefix}/{number}", *TOOL)
                with self.lock:
                    self.sent.append(Sent(name, outcome, sent, time.time()))
                number += 1
                if pace:
                    self.stopping.wait(pace)
        finally:
            for client in clients.values():
                client.close()

    def start(self) -> "AlternatingLoad":
        self.started = time.time()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> list[Sent]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "a load thread hangs"
        self.stopped = time.time()
        return self.sent

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if not self.stopping.is_set():
            self.stop()

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.sent)

    def wait_for(self, predicate, timeout: float, since: float = 0.0):
        """Until predicate(calls answered after `since`) is true, `timeout` seconds at most; the calls, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = [call for call in self.snapshot() if call.answered >= since]
            if predicate(calls):
                return calls
            time.sleep(0.02)
        return None


def counts(calls: list[Sent]) -> dict:
    found: dict = {}
    for call in calls:
        found[call.kind] = found.get(call.kind, 0) + 1
    return found
