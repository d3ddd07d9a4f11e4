"""Operating the gateway: `mcpgw config check` (and `serve` refusing the same configurations), the admin listener
(/healthz, /readyz, /metrics, POST /reload), JSON logs, and an unreachable upstream (rate-limited log line, /readyz).

Every gateway here is a real `mcpgw serve` process; MCP traffic goes over TLS with the dev client certificates to a
real MCP Python SDK upstream.
"""
import copy
import http.client
import json
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import httpx2
import pytest

from conftest import ROOT, mcpgw_binary
from test_mcp_sdk_conformance import free_port, start_upstream
from test_serve_cli import start as start_serve

CERTS = ROOT / "certs-dev"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


# --- configuration files ------------------------------------------------------------------------------------------

def dev_config(tmp_path) -> dict:
    """mcpgw.dev.json with absolute paths (it is written into tmp_path) and a private copy of policies/."""
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    absolute = lambda relative: str(ROOT / relative)  # noqa: E731
    policies = tmp_path / "policies"
    if not policies.exists():
        shutil.copytree(ROOT / "policies", policies)
    config["policies"] = str(policies)
    config["tls"]["certificate_chain"] = absolute(config["tls"]["certificate_chain"])
    config["tls"]["private_key"] = absolute(config["tls"]["private_key"])
    for tenant in config["tenants"].values():
        tenant["client_ca"] = [absolute(path) for path in tenant["client_ca"]]
        tenant["crl"] = [absolute(path) for path in tenant["crl"]]
        for key in tenant["jwt"]["keys"]:
            for field in ("public_key_file", "secret_file"):
                if field in key:
                    key[field] = absolute(key[field])
    return config


def write_config(tmp_path, config: dict, name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config, indent=2))
    return str(path)


def config_check(path: str) -> tuple[int, list[str], str]:
    """`mcpgw config check PATH` → (exit status, stdout lines, stderr)."""
    result = subprocess.run([mcpgw_binary(), "config", "check", path], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    return result.returncode, result.stdout.splitlines(), result.stderr


def problems(path: str) -> list[str]:
    """The problems `config check` prints for PATH (without "error: "); asserts exit 1 and one line per problem."""
    status, lines, stderr = config_check(path)
    assert status == 1, (status, lines, stderr)
    assert lines, f"no problem printed; stderr: {stderr}"
    for line in lines:
        assert line.startswith((f"error: {path}: ", f"warning: {path}: ")), f"every line is 'error|warning: <file>: ...': {line!r}"
    return [line[len("error: "):] for line in lines if line.startswith("error: ")]


def only_problem(path: str) -> str:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


def break_tls_key(config: dict) -> None:
    config["tls"]["private_key"] = str(CERTS / "acme" / "agents" / "bot1.key")  # not server.pem's key


def break_policy_key(tmp_path) -> str:
    """Renames R2's `tools` to `tool` in the tmp copy of policies/acme/production.json; returns the file."""
    policy = tmp_path / "policies" / "acme" / "production.json"
    document = json.loads(policy.read_text())
    assert document["rules"][1]["id"] == "R2"
    document["rules"][1]["tool"] = document["rules"][1].pop("tools")
    policy.write_text(json.dumps(document, indent=2))
    return str(policy)


def test_shipped_dev_configuration_passes(mcpgw):
    status, out = mcpgw("config", "check", "mcpgw.dev.json")
    assert status == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith("ok: mcpgw.dev.json"), out
    assert "error:" not in out
    # The dev configuration names no upstream (`mcpgw demo` and `serve --upstream` give one), and says so.
    assert [line for line in lines[:-1] if "no upstream" not in line] == [], out


def test_settings_that_work_but_are_unsafe_are_warned_about(tmp_path):
    """An admin listener off loopback without TLS, and shared limits falling back to whole local limits on every
    replica: `config check` passes (serve would start) but says so, naming the field."""
    config = dev_config(tmp_path)
    config["admin"] = {"listen": "0.0.0.0:9464"}
    config["redis"] = {"url": "redis://127.0.0.1:6379", "failure_mode": "local_fallback"}
    path = write_config(tmp_path, config)
    status, lines, stderr = config_check(path)
    assert status == 0, (lines, stderr)
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert any("admin.listen: 0.0.0.0:9464 is not on loopback and has no TLS" in line for line in warnings), lines
    assert any("redis.replicas: 1" in line and "acme" in line for line in warnings), lines
    assert lines[-1].startswith("ok: "), lines
    # The same file with the admin listener on loopback, the replicas counted and upstreams set: no warning.
    config["admin"] = {"listen": "127.0.0.1:9464"}
    config["redis"]["replicas"] = 3
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": "http://127.0.0.1:9/mcp"}
    status, lines, _ = config_check(write_config(tmp_path, config))
    assert status == 0 and not [line for line in lines if line.startswith("warning: ")], lines
    # Found by review: with acme's CRL configured, a globex without one has every handshake of its agents fail.
    config["tenants"]["globex"]["crl"] = []
    status, lines, _ = config_check(write_config(tmp_path, config))
    assert status == 0, lines
    assert any("tenants.globex: no crl, while tenant acme has one" in line for line in lines), lines


def test_fetches_over_https_and_a_shared_admin_port_are_checked(tmp_path):
    """Found by review: a key set or introspection endpoint whose `ca_file` is missing, and an admin listener on the
    MCP listener's port, passed `config check`; `serve` then died ("Address already in use", an unnamed TLS error) or
    failed every key fetch, so the tenant's tokens never verified."""
    config = dev_config(tmp_path)
    missing = str(tmp_path / "no-such-ca.pem")
    secret = tmp_path / "client-secret.txt"
    secret.write_text("s3cret\n")
    config["tenants"]["acme"]["jwt"] = {"issuers": ["https://login.example/acme"], "jwks_uri": "https://login.example/jwks.json",
                                        "ca_file": missing}
    config["tenants"]["globex"]["oauth"] = {"authorization_servers": ["https://login.example/globex"], "introspection": {
        "url": "https://login.example/introspect", "client_id": "mcpgw", "client_secret_file": str(secret), "ca_file": missing}}
    config["identity"]["public_url"] = "https://mcp.example.com"
    config["admin"] = {"listen": "127.0.0.1:" + config["listen"].rsplit(":", 1)[1]}
    found = problems(write_config(tmp_path, config))
    assert any("tenants.acme.jwt (keys fetched over HTTPS): " in line and "no-such-ca.pem" in line for line in found), found
    assert any("tenants.globex.oauth.introspection: " in line and "no-such-ca.pem" in line for line in found), found
    assert any("admin.listen: " in line and "is the MCP listener's port too" in line for line in found), found


def test_settings_that_shut_out_a_tenants_callers_are_warned_about(tmp_path):
    """Found by review: a tenant without an upstream (every request 502), `client_auth: required` with a tenant that has
    no CA (no handshake of its callers completes), and `client_auth: none` with a tenant's CA (never used) all
    passed `config check` without a word."""
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["upstream"] = {"url": "http://127.0.0.1:9/mcp"}
    del config["tenants"]["globex"]["client_ca"], config["tenants"]["globex"]["crl"]
    config["tls"]["client_auth"] = "required"
    status, lines, stderr = config_check(write_config(tmp_path, config))
    assert status == 0 and lines[-1].startswith("ok: "), (lines, stderr)
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert any("tenants.globex: no upstream: its MCP requests will get 502" in line for line in warnings), lines
    assert not any("tenants.acme: no upstream" in line for line in warnings), lines
    assert any("tls.client_auth: required, and tenant globex has no client_ca" in line for line in warnings), lines
    config["tls"]["client_auth"] = "none"
    status, lines, _ = config_check(write_config(tmp_path, config))
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert status == 0 and any("tls.client_auth: none, so tenant acme's client_ca is never used" in line for line in warnings), lines
    assert not any("client_auth" in line and "globex" in line for line in warnings), lines


def test_unknown_top_level_key(tmp_path):
    config = dev_config(tmp_path)
    config["listne"] = "127.0.0.1:1"
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert problem.startswith(f"{path}: listne: unknown key"), problem
    assert "allowed:" in problem and "listen" in problem


def test_unknown_key_inside_tenant_jwt(tmp_path):
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["jwt"]["audiences"] = ["mcpgw"]
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert problem.startswith(f"{path}: tenants.acme.jwt.audiences: unknown key"), problem


def test_rate_limit_bucket_cap_per_tenant_is_a_positive_limit(tmp_path):
    config = dev_config(tmp_path)
    config.setdefault("limits", {})["max_rate_limit_buckets_per_tenant"] = 5000
    status, lines, stderr = config_check(write_config(tmp_path, config))
    assert status == 0, (lines, stderr)
    config["limits"]["max_rate_limit_buckets_per_tenant"] = 0
    path = write_config(tmp_path, config, "zero.json")
    problem = only_problem(path)
    assert "limits.max_rate_limit_buckets_per_tenant" in problem, problem


def test_upstream_keep_alive_seconds_is_checked(tmp_path):
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["upstream"] = {"url": "http://127.0.0.1:9/mcp", "keep_alive_seconds": 2}
    status, lines, stderr = config_check(write_config(tmp_path, config))
    assert status == 0, (lines, stderr)
    for bad, name in ((-1, "negative.json"), (3601, "long.json"), ("5", "text.json")):
        config["tenants"]["acme"]["upstream"]["keep_alive_seconds"] = bad
        path = write_config(tmp_path, config, name)
        problem = only_problem(path)
        assert "tenants.acme.upstream.keep_alive_seconds" in problem, problem


@pytest.mark.parametrize("section, key, value, field", [
    ("limits", "max_json_depth", 100000000, "limits.max_json_depth"),
    ("limits", "event_loops", 100000, "limits.event_loops"),
    ("limits", "costly_decision_ms", 0, "limits.costly_decision_ms"),
    ("identity", "leeway_seconds", 9223372036854775807, "identity.leeway_seconds"),
    ("identity", "leeway_seconds", -5, "identity.leeway_seconds"),
    ("identity", "max_token_bytes", 0, "identity.max_token_bytes"),
    ("identity", "token_cache_size", -1, "identity.token_cache_size"),
    ("tls", "verify_depth", -1, "tls.verify_depth"),
    # Plain HTTP with a certificate configured (the certificate silently unused).
    ("tls", "insecure_plain_http", True, "tls.insecure_plain_http"),
    ("tenants.acme.upstream", "url", "http://127.0.0.1:9/mcp\u0000", "tenants.acme.upstream"),
    ("sessions", "lifetime_seconds", 9223372036854775807, "sessions.lifetime_seconds"),
    (None, "mcp_path", "/mcp?x", "mcp_path"),
    (None, "audit_log", "/nonexistent/dir/audit.log", "audit_log"),
    (None, "audit_log", "/tmp", "audit_log"),
    ("admin.limits", "max_connections", 0, "admin.limits.max_connections"),
    ("admin.limits", "idle_timeout_seconds", 1000000000, "admin.limits.idle_timeout_seconds"),
    ("admin.limits", "request_head_timeout_seconds", -1, "admin.limits.request_head_timeout_seconds"),
    ("admin.limits", "max_connection", 8, "admin.limits"),
], ids=lambda value: str(value)[:20])
def test_values_that_would_crash_or_silently_break_the_gateway_are_refused(tmp_path, section, key, value, field):
    # A depth of 100,000,000 let one request overflow the parser's stack; a leeway near Int64.max overflowed on the
    # first token; a query in mcp_path matched no request.
    config = dev_config(tmp_path)
    place = config
    for part in (section.split(".") if section else []):
        place = place.setdefault(part, {})
    place[key] = value
    problem = only_problem(write_config(tmp_path, config))
    assert field in problem, problem


def test_admin_limit_per_source_above_the_total_is_refused(tmp_path):
    config = dev_config(tmp_path)
    config["admin"] = {"limits": {"max_connections": 4, "max_connections_per_source": 8}}
    problem = only_problem(write_config(tmp_path, config))
    assert "admin.limits.max_connections_per_source" in problem and "at most max_connections (4" in problem, problem


def test_body_budgets_below_the_body_limit_are_refused(tmp_path):
    """A budget of bodies being received smaller than one body the configuration allows (less its first 64 KiB, not
    counted) would refuse every such body: refused by `config check`, not found by the first large call."""
    config = dev_config(tmp_path)
    config.setdefault("limits", {}).update({"max_body_bytes": 1048576 + 65536, "max_receiving_body_bytes_per_tenant": 1048576})
    status, lines, stderr = config_check(write_config(tmp_path, config))
    assert status == 0, (lines, stderr)
    for key in ("max_receiving_body_bytes_per_tenant", "max_receiving_body_bytes"):
        config["limits"] = {"max_body_bytes": 1048576 + 65537, key: 1048576}
        problem = only_problem(write_config(tmp_path, config, f"{key}.json"))
        assert f"limits.{key}" in problem and "at least 1048577" in problem, problem


def test_tls_private_key_that_does_not_match_the_certificate(tmp_path):
    config = dev_config(tmp_path)
    break_tls_key(config)
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert str(CERTS / "acme" / "agents" / "bot1.key") in problem, problem
    assert "mismatch" in problem or "does not match" in problem, problem
    assert re.search(r": tls\.private_key: ", problem), f"the problem must name the field tls.private_key: {problem}"


def test_unreadable_certificate_file(tmp_path):
    config = dev_config(tmp_path)
    missing = str(tmp_path / "no-such-server.pem")
    config["tls"]["certificate_chain"] = missing
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert missing in problem and ("No such file" in problem or "cannot" in problem), problem
    assert re.search(r": tls\.certificate_chain: ", problem), \
        f"the problem must name the field tls.certificate_chain: {problem}"


def test_client_ca_that_is_not_pem(tmp_path):
    config = dev_config(tmp_path)
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("this is not a PEM certificate\n")
    config["tenants"]["acme"]["client_ca"] = [str(bad)]
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert str(bad) in problem and "no PEM certificate" in problem, problem
    assert re.search(r": tenants\.acme\.client_ca(\[0\])?: ", problem), \
        f"the problem must name the field tenants.acme.client_ca: {problem}"


def test_crl_that_is_not_a_crl(tmp_path):
    config = dev_config(tmp_path)
    not_a_crl = str(CERTS / "acme" / "ca.pem")  # a certificate, not a CRL
    config["tenants"]["acme"]["crl"] = [not_a_crl]
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert not_a_crl in problem and "CRL" in problem, problem
    assert re.search(r": tenants\.acme\.crl(\[0\])?: ", problem), \
        f"the problem must name the field tenants.acme.crl: {problem}"


def test_a_crl_naming_a_trusted_ca_must_be_signed_by_it(tmp_path):
    """globex listing a CRL that names acme's CA but is signed with globex's key: loaded, it would fail every acme
    agent's handshake ("CRL signature failure"). Refused, and serve does not start."""
    config = dev_config(tmp_path)
    config["tenants"]["globex"]["crl"] = config["tenants"]["globex"].get("crl", []) + [str(CERTS / "untrusted/forged-acme.crl.pem")]
    problem = only_problem(write_config(tmp_path, config))
    assert "forged-acme.crl.pem names a trusted CA as its issuer" in problem and "but is not signed by it" in problem, problem


def test_policy_file_with_a_syntax_error(tmp_path):
    config = dev_config(tmp_path)
    policy = tmp_path / "policies" / "acme" / "production.json"
    policy.write_text('{"name": "production", "rules": [ {"id": "R1",, }\n')
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert problem.startswith(f"{path}: policies: {policy}: not valid JSON"), problem


def test_policy_file_with_an_unknown_rule_key(tmp_path):
    config = dev_config(tmp_path)
    policy = break_policy_key(tmp_path)
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert problem.startswith(f"{path}: policies: {policy}: "), problem
    assert "rule R2" in problem and "rules[1].tool: unknown key" in problem, problem


@pytest.mark.parametrize("url, words", [("ftp://x", "http:// or https://"), ("http://", "needs a host")])
def test_malformed_upstream_url(tmp_path, url, words):
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["upstream"] = {"url": url}
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert re.match(re.escape(path) + r": tenants\.acme\.upstream(\.url)?: ", problem), problem
    assert words in problem, problem


def test_jwt_key_file_missing(tmp_path):
    config = dev_config(tmp_path)
    missing = str(tmp_path / "missing-acme.pub")
    config["tenants"]["acme"]["jwt"]["keys"][0]["public_key_file"] = missing
    path = write_config(tmp_path, config)
    problem = only_problem(path)
    assert problem.startswith(f"{path}: tenants.acme.jwt.keys[0]"), problem
    assert missing in problem and "cannot read" in problem, problem


def second_problem_policy(tmp_path, config):
    return [f"policies: {break_policy_key(tmp_path)}: rule R2: rules[1].tool: unknown key"]


def second_problem_jwt(tmp_path, config):
    missing = str(tmp_path / "missing-acme.pub")
    config["tenants"]["acme"]["jwt"]["keys"][0]["public_key_file"] = missing
    return ["tenants.acme.jwt.keys[0]", missing]


def second_problem_upstream(tmp_path, config):
    config["tenants"]["acme"]["upstream"] = {"url": "ftp://x"}
    return ["tenants.acme.upstream", "http:// or https://"]


@pytest.mark.parametrize("second", [second_problem_policy, second_problem_jwt, second_problem_upstream],
                         ids=["policy", "jwt-key-file", "upstream-url"])
def test_problems_in_two_parts_are_both_reported(tmp_path, second):
    """A broken TLS key does not hide a problem in another part, and the other way round."""
    config = dev_config(tmp_path)
    break_tls_key(config)
    expected = second(tmp_path, config)
    path = write_config(tmp_path, config)
    found = problems(path)
    assert len(found) == 2, found
    assert any("bot1.key" in problem and "mismatch" in problem for problem in found), found
    assert any(all(words in problem for words in expected) for problem in found), (expected, found)


@pytest.mark.parametrize("broken", ["tls-and-policy", "upstream"])
def test_serve_refuses_the_configuration_with_the_same_problems(tmp_path, broken):
    config = dev_config(tmp_path)
    if broken == "tls-and-policy":
        break_tls_key(config)
        break_policy_key(tmp_path)
    else:
        config["tenants"]["acme"]["upstream"] = {"url": "http://"}
    path = write_config(tmp_path, config)
    found = problems(path)
    result = subprocess.run([mcpgw_binary(), "serve", "--config", path, "--listen", "127.0.0.1:0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "listening" not in result.stderr
    for problem in found:
        assert f"configuration refused: {problem}" in result.stderr, (problem, result.stderr)


# --- running gateways -----------------------------------------------------------------------------------------------

class Gateway:
    """A `mcpgw serve` process; a thread collects its stderr lines (so that the pipe never fills)."""

    def __init__(self, *args: str, json_logs: bool = False, admin_port: int | None = None):
        if admin_port:
            args = (*args, "--admin-listen", f"127.0.0.1:{admin_port}")
        if json_logs:
            args = (*args, "--log-format", "json")
        self.admin_port = admin_port
        self.process = subprocess.Popen([mcpgw_binary(), "serve", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.listening = threading.Event()
        self.port = None
        self.reader = threading.Thread(target=self._read, args=(json_logs,), daemon=True)
        self.reader.start()
        if not self.listening.wait(30):
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError("gateway did not start: " + "".join(self.lines))
        if admin_port:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    if self.admin("GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            else:
                self.stop()
                raise AssertionError("admin listener did not answer: " + "".join(self.lines))

    def _read(self, json_logs: bool) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if self.port is None:
                if json_logs:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    address = entry.get("listen.address", "") if entry.get("message") == "listening" else ""
                else:
                    address = line if "listening" in line else ""
                match = re.search(r"127\.0\.0\.1:(\d+)", address)
                if match and ("listen.address" in line):
                    self.port = int(match.group(1))
                    self.listening.set()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.reader.join(timeout=10)
        return self.process.returncode

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def admin(self, method: str, path: str, headers: dict | None = None) -> tuple[int, str, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                         data=b"" if method == "POST" else None, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), dict(error.headers)

    def metrics(self) -> dict:
        status, text, headers = self.admin("GET", "/metrics")
        assert status == 200, text
        return parse_metrics(text)

    def url(self) -> str:
        return f"https://localhost:{self.port}/mcp"


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict:
    """Prometheus text exposition → {(name, frozenset(labels)): value}; every sample line must parse."""
    samples = {}
    typed = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, _, labels, value = match.groups()
        assert name in typed or re.sub(r"_(bucket|sum|count)$", "", name) in typed, f"no # TYPE for {name}"
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def tls_client(agent: str | None = "acme/agents/bot1") -> httpx2.Client:
    context = ssl.create_default_context(cafile=str(CERTS / "gateway-ca.pem"))
    if agent:
        context.load_cert_chain(str(CERTS / f"{agent}.pem"), str(CERTS / f"{agent}.key"))
    return httpx2.Client(verify=context, timeout=httpx2.Timeout(20))


MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def initialize(client: httpx2.Client, url: str) -> dict:
    """Initializes an MCP session; returns the headers for the session's further requests."""
    response = client.post(url, headers=MCP_HEADERS, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ops-test", "version": "1"}}})
    assert response.status_code == 200, response.text
    headers = {**MCP_HEADERS, "Mcp-Protocol-Version": "2025-06-18"}
    if "mcp-session-id" in response.headers:
        headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
    answer = client.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert answer.status_code in (200, 202), answer.text
    return headers


def call_tool(client, url, headers, id_, name, arguments) -> tuple[int, dict]:
    response = client.post(url, headers=headers, json={
        "jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
    return response.status_code, response.json()


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value or time.time() > deadline:
            return value
        time.sleep(0.05)


# --- admin listener -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdk_upstream():
    process, url = start_upstream("json")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def admin_gateway(sdk_upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp("admin")
    shutil.copytree(ROOT / "policies", folder / "policies")
    audit = folder / "audit.log"
    gateway = Gateway("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--policies", str(folder / "policies"), "--audit-log", str(audit), admin_port=free_port())
    gateway.folder, gateway.audit = folder, audit
    yield gateway
    assert gateway.stop() == 0, gateway.stderr


def healthz_from(port: int, source: str) -> int:
    """GET /healthz on the admin listener from `source` (a loopback address): its status, or 0 when the connection is
    closed without an answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def held_admin_connection(port: int) -> socket.socket:
    """A connection the admin listener admitted (not closed within 0.3 s): one closed at accept, while the listener
    still counts a connection that has just ended (the start-up check's), is replaced. Bounded."""
    for _ in range(20):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        readable, _, _ = select.select([connection], [], [], 0.3)
        if not readable:
            return connection
        connection.close()
    raise AssertionError("the admin listener closed every connection")


def test_admin_limits_from_the_configuration_file(sdk_upstream, tmp_path):
    # Two connections per source and 3 s of silence (`--admin-listen` overrides the address only): a third connection
    # from the source holding two is closed at accept while another source is served, and once the silent two are
    # closed the first source is served again.
    config = dev_config(tmp_path)
    config["admin"] = {"limits": {"max_connections_per_source": 2, "idle_timeout_seconds": 3}}
    gateway = Gateway("--config", write_config(tmp_path, config), "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    try:
        held = [held_admin_connection(gateway.admin_port) for _ in range(2)]
        assert healthz_from(gateway.admin_port, "127.0.0.1") == 0, "a third connection was served"
        assert healthz_from(gateway.admin_port, "127.0.0.2") == 200
        for connection in held:
            # Closed by the gateway after 3 s of silence (the default is 60 s; the 10 s socket timeout bounds this).
            assert connection.recv(1) == b""
            connection.close()
        assert wait_for(lambda: healthz_from(gateway.admin_port, "127.0.0.1") == 200)
    finally:
        assert gateway.stop() == 0, gateway.stderr


def test_admin_health_and_readiness(admin_gateway):
    status, body, _ = admin_gateway.admin("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, body, _ = admin_gateway.admin("GET", "/readyz")
    answer = json.loads(body)
    assert status == 200, body
    assert answer["ready"] is True and isinstance(answer["checks"], dict) and answer["checks"], answer
    assert answer["checks"].get("upstreams_failing") == [], answer


def test_admin_wrong_method_and_unknown_path(admin_gateway):
    status, _, headers = admin_gateway.admin("GET", "/reload")
    assert status == 405
    assert headers.get("Allow") == "POST"
    assert admin_gateway.admin("GET", "/no-such-thing")[0] == 404
    assert admin_gateway.admin("POST", "/healthz")[0] == 405


def test_admin_refuses_browsers_and_foreign_host_names(admin_gateway):
    before = admin_gateway.metrics()
    # A web page's cross-site POST (a "simple" request: no preflight) carries Origin.
    status, body, _ = admin_gateway.admin("POST", "/reload", {"Origin": "https://attacker.example",
                                                             "Content-Type": "text/plain"})
    assert status == 403 and "Origin" in body, body
    # A page that rebinds its own name to the admin address reads with that name in Host.
    status, body, _ = admin_gateway.admin("GET", "/metrics", {"Host": f"rebind.attacker.example:{admin_gateway.admin_port}"})
    assert status == 403 and "mcpgw_" not in body, body
    after = admin_gateway.metrics()
    assert metric(after, "mcpgw_reloads_total", result="success") == metric(before, "mcpgw_reloads_total", result="success")
    # The listener's own address and localhost are served.
    for host in (f"127.0.0.1:{admin_gateway.admin_port}", f"localhost:{admin_gateway.admin_port}", "localhost"):
        assert admin_gateway.admin("GET", "/healthz", {"Host": host})[0] == 200, host


def test_admin_metrics_count_real_mcp_traffic(admin_gateway):
    url = admin_gateway.url()
    before = admin_gateway.metrics()
    with tls_client() as client:
        headers = initialize(client, url)  # two audit records: initialize, notifications/initialized
        status, answer = call_tool(client, url, headers, 1, "read_file", {"path": "readme.txt"})
        assert status == 200 and "result" in answer, answer
        status, answer = call_tool(client, url, headers, 2, "delete_file", {"path": "readme.txt"})
        assert "error" in answer and answer["error"]["data"]["rule"] == "R3", answer
    with tls_client(agent=None) as anonymous:
        response = anonymous.post(url, headers=MCP_HEADERS, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
        assert response.status_code == 401, response.text
    after = wait_for(lambda: (lambda m: m if metric(m, "mcpgw_audit_records_total")
                              - metric(before, "mcpgw_audit_records_total") >= 5 else None)(admin_gateway.metrics()))
    after = after or admin_gateway.metrics()

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("mcpgw_requests_total", tenant="acme", method="tools/call", decision="allow") == 1
    assert delta("mcpgw_requests_total", tenant="acme", method="tools/call", decision="deny") == 1
    assert delta("mcpgw_policy_decisions_total", tenant="acme", decision="allow", rule="R1") == 1
    assert delta("mcpgw_policy_decisions_total", tenant="acme", decision="deny", rule="R3") == 1
    assert delta("mcpgw_authentication_failures_total", reason="no_credentials") == 1
    assert delta("mcpgw_audit_records_total") == 5  # initialize, initialized, allow, deny, authentication failure
    handshakes = sum(value - before.get(key, 0.0) for key, value in after.items()
                     if key[0] == "mcpgw_tls_handshakes_total" and ("result", "success") in key[1])
    assert handshakes >= 1, [key for key in after if key[0] == "mcpgw_tls_handshakes_total"]
    for key in after:
        if key[0] == "mcpgw_tls_handshakes_total":
            assert {label for label, _ in key[1]} == {"result", "version", "reason"}, key
    names = {key[0] for key in after}
    for name in ("mcpgw_reloads_total", "mcpgw_audit_records_total", "mcpgw_requests_total",
                 "mcpgw_policy_decisions_total", "mcpgw_authentication_failures_total", "mcpgw_tls_handshakes_total"):
        assert name in names, name


def test_traceparent_reaches_the_audit_record(admin_gateway):
    url = admin_gateway.url()
    with tls_client() as client:
        headers = initialize(client, url)
        status, answer = call_tool(client, url, {**headers, "traceparent": TRACEPARENT}, 4711, "read_file",
                                   {"path": "readme.txt"})
        assert status == 200 and "result" in answer, answer

    def record():
        for line in admin_gateway.audit.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("jsonrpc_id") == 4711:
                return entry
        return None

    entry = wait_for(record)
    assert entry is not None, admin_gateway.audit.read_text()[-2000:]
    assert entry["trace_id"] == TRACE_ID, entry


def test_admin_reload_succeeds_then_refuses_a_broken_policy(admin_gateway):
    before = admin_gateway.metrics()
    status, body, _ = admin_gateway.admin("POST", "/reload")
    answer = json.loads(body)
    assert status == 200, body
    assert answer["reloaded"] is True, answer
    for part in ("policies", "identity", "tls", "audit_log"):
        assert answer["parts"][part]["ok"] is True and "detail" in answer["parts"][part], answer
    middle = admin_gateway.metrics()
    assert metric(middle, "mcpgw_reloads_total", result="success") - metric(before, "mcpgw_reloads_total", result="success") == 1

    policy = admin_gateway.folder / "policies" / "acme" / "production.json"
    original = policy.read_text()
    policy.write_text('{"name": broken')
    try:
        status, body, _ = admin_gateway.admin("POST", "/reload")
        answer = json.loads(body)
        assert status == 500, body
        assert answer["reloaded"] is False, answer
        assert answer["parts"]["policies"]["ok"] is False, answer
        assert str(policy) in answer["parts"]["policies"]["detail"], answer
        assert "not valid JSON" in answer["parts"]["policies"]["detail"], answer
        after = admin_gateway.metrics()
        assert metric(after, "mcpgw_reloads_total", result="failure") - metric(middle, "mcpgw_reloads_total", result="failure") == 1
        # The previous policies stay in force: still ready, and read_file is still allowed.
        status, body, _ = admin_gateway.admin("GET", "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True, body
        url = admin_gateway.url()
        with tls_client() as client:
            headers = initialize(client, url)
            status, answer = call_tool(client, url, headers, 5, "read_file", {"path": "readme.txt"})
            assert status == 200 and "result" in answer, answer
    finally:
        policy.write_text(original)
    status, body, _ = admin_gateway.admin("POST", "/reload")
    assert status == 200 and json.loads(body)["reloaded"] is True, body


def test_admin_reload_reads_a_single_policy_file_again(sdk_upstream, tmp_path):
    # The single-file mode (`--policies FILE`): one document for every tenant; a reload reads that file again.
    policy = tmp_path / "only.json"
    shutil.copy(ROOT / "policies" / "acme" / "production.json", policy)
    gateway = Gateway("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--policies", str(policy), "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    try:
        url = gateway.url()
        with tls_client() as client:
            headers = initialize(client, url)
            status, answer = call_tool(client, url, headers, 5, "read_file", {"path": "readme.txt"})
            assert status == 200 and "result" in answer, answer
            document = json.loads(policy.read_text())
            document["rules"].insert(0, {"id": "NOREAD", "action": "deny", "tools": ["read_file"]})
            policy.write_text(json.dumps(document))
            status, body, _ = gateway.admin("POST", "/reload")
            assert status == 200 and json.loads(body)["parts"]["policies"]["ok"] is True, body
            status, answer = call_tool(client, url, headers, 6, "read_file", {"path": "readme.txt"})
            assert answer.get("error", {}).get("data", {}).get("rule") == "NOREAD", answer
    finally:
        assert gateway.stop() == 0, gateway.stderr


def test_admin_reload_names_the_settings_only_a_restart_applies(sdk_upstream, tmp_path):
    config = dev_config(tmp_path)
    credential = tmp_path / "upstream-key.txt"
    credential.write_text("first-secret\n")
    config["tenants"]["acme"]["upstream"] = {"url": sdk_upstream, "credential_header": "X-Upstream-Key",
                                             "credential_file": str(credential)}
    path = write_config(tmp_path, config)
    gateway = Gateway("--config", path, "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    try:
        status, body, _ = gateway.admin("POST", "/reload")
        assert status == 200 and json.loads(body)["parts"]["restart_only_settings"] == {"ok": True, "detail": "unchanged"}, body
        # Reloaded settings (a tenant's JWT issuers, the TLS minimum version, a whole identity section of reloaded
        # settings taken out) are not restart-only …
        config["tenants"]["acme"]["jwt"]["issuers"].append("https://issuer.example/extra")
        config["tls"]["min_version"] = "TLSv1.3"
        del config["identity"]
        write_config(tmp_path, config)
        status, body, _ = gateway.admin("POST", "/reload")
        assert status == 200, body
        # … a file read once at start, rotated in place at the same path, is.
        credential.write_text("second-secret\n")
        status, body, _ = gateway.admin("POST", "/reload")
        part = json.loads(body)["parts"]["restart_only_settings"]
        assert status == 500 and "tenants.acme.upstream.credential_file" in part["detail"], body
        credential.write_text("first-secret\n")
        # … a body limit and a tenant's upstream are: the reload says so instead of claiming success.
        config.setdefault("limits", {})["max_body_bytes"] = 1024
        config["tenants"]["globex"]["upstream"] = {"url": "http://127.0.0.1:9/mcp"}
        write_config(tmp_path, config)
        status, body, _ = gateway.admin("POST", "/reload")
        answer = json.loads(body)
        assert status == 500 and answer["reloaded"] is False, body
        part = answer["parts"]["restart_only_settings"]
        assert part["ok"] is False, part
        assert "limits.max_body_bytes" in part["detail"] and "tenants.globex.upstream" in part["detail"], part
        assert answer["parts"]["policies"]["ok"] is True and answer["parts"]["identity"]["ok"] is True, answer
        # A tenant added (found by review: reported as applied in full, and its calls got 502 for want of an
        # upstream): named; the rest of the identity is reloaded, without the new tenant until the restart.
        config["tenants"]["initech"] = {"jwt": {"issuers": ["https://issuer.example/initech"], "keys": [
            {"kid": "initech-hs256", "alg": "HS256", "secret_file": str(ROOT / "certs-dev/jwt/acme-hs256.secret")}]}}
        shutil.copytree(tmp_path / "policies" / "globex", tmp_path / "policies" / "initech")
        write_config(tmp_path, config)
        status, body, _ = gateway.admin("POST", "/reload")
        answer = json.loads(body)
        assert "tenants.initech (added)" in answer["parts"]["restart_only_settings"]["detail"], body
        assert answer["parts"]["identity"]["ok"] is True, body
    finally:
        assert gateway.stop() == 0, gateway.stderr


def test_a_tenant_removed_by_a_reload_is_applied_not_owed_to_a_restart(sdk_upstream, tmp_path):
    """Found by review: removing a tenant dropped it at once, yet the reload answered `reloaded: false`, named its
    upstream as a setting whose running value "stays in force", and every later reload failed the same way."""
    config = dev_config(tmp_path)
    config["tenants"]["globex"]["upstream"] = {"url": sdk_upstream}
    path = write_config(tmp_path, config)
    gateway = Gateway("--config", path, "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    try:
        with tls_client("globex/agents/bot1") as client:
            initialize(client, gateway.url())
        del config["tenants"]["globex"]
        write_config(tmp_path, config)
        for _ in range(2):
            status, body, _ = gateway.admin("POST", "/reload")
            answer = json.loads(body)
            assert status == 200 and answer["reloaded"] is True, body
            assert answer["parts"]["restart_only_settings"] == {"ok": True, "detail": "unchanged"}, body
        # Its CA left the TLS context with it: its agents' handshakes fail.
        with tls_client("globex/agents/bot1") as client:
            with pytest.raises(httpx2.HTTPError, match="unknown ca"):
                client.post(gateway.url(), headers=MCP_HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        with tls_client() as client:
            initialize(client, gateway.url())
    finally:
        assert gateway.stop() == 0, gateway.stderr


# --- JSON logs --------------------------------------------------------------------------------------------------------

def test_json_log_format_every_line_is_an_object(sdk_upstream):
    gateway = Gateway("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", "/dev/null", json_logs=True)
    try:
        with tls_client() as client:
            headers = initialize(client, gateway.url())
            status, answer = call_tool(client, gateway.url(), headers, 1, "read_file", {"path": "readme.txt"})
            assert status == 200 and "result" in answer, answer
    finally:
        status = gateway.stop()
    assert status == 0, gateway.stderr
    assert len(gateway.lines) >= 3, gateway.stderr
    entries = []
    for line in gateway.lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        for field in ("time", "level", "logger", "message"):
            assert isinstance(entry.get(field), str) and entry[field], (field, line)
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", entry["time"]), line
        assert entry["level"] in {"trace", "debug", "info", "notice", "warning", "error", "critical"}, line
        entries.append(entry)
    listening = [entry for entry in entries if entry["message"] == "listening"]
    assert len(listening) == 1, entries
    assert listening[0]["listen.address"] == f"127.0.0.1:{gateway.port}", listening
    assert any(entry["message"] == "listener stopped" for entry in entries), entries


# --- unreachable upstream ---------------------------------------------------------------------------------------------

def test_unreachable_upstream_logs_once_and_fails_readiness_once_no_tenant_is_served():
    closed = free_port()
    gateway = Gateway("--config", "mcpgw.dev.json", "--listen", "127.0.0.1:0", "--upstream",
                      f"http://127.0.0.1:{closed}/mcp", "--audit-log", "/dev/null", admin_port=free_port())
    try:
        answers = []
        with tls_client() as client:
            for index in range(20):
                response = client.post(gateway.url(), headers=MCP_HEADERS, json={
                    "jsonrpc": "2.0", "id": 100 + index, "method": "tools/call",
                    "params": {"name": "read_file", "arguments": {"path": "readme.txt"}}})
                answers.append((response.status_code, response.json()))
        for index, (status, answer) in enumerate(answers):
            assert status >= 500 and "error" in answer and "result" not in answer, answer
            assert answer["error"]["code"] == -31004, answer
        # Both tenants are served by this one upstream (`--upstream`): acme's failed connects make it unreachable for
        # globex too, which has sent nothing, and no tenant can be served (before, failures were counted per tenant
        # and globex, idle, counted as served).
        status, body, _ = gateway.admin("GET", "/readyz")
        answer = json.loads(body)
        assert status == 503, body
        assert answer["ready"] is False and answer["checks"]["upstreams_failing"] == ["acme", "globex"], answer
        [entry] = answer["checks"]["upstreams_unreachable"]
        assert entry["upstream"] == f"http://127.0.0.1:{closed}" and entry["tenants"] == ["acme", "globex"], entry
        assert "refused" in entry["error"].lower() and entry["for_seconds"] >= 0, entry
        with tls_client("globex/agents/bot1") as client:
            response = client.post(gateway.url(), headers=MCP_HEADERS, json={
                "jsonrpc": "2.0", "id": 200, "method": "tools/call", "params": {"name": "get_weather", "arguments": {}}})
            assert response.status_code >= 500, response.text
        # The upstream comes back (it accepts connections). No call is sent: `/readyz` probes what it found
        # unreachable, and a later check sees the upstream reachable again. The probe sends no request.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", closed))
        listener.listen(8)
        listener.settimeout(0.05)
        accepted = []
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                status, body, _ = gateway.admin("GET", "/readyz")
                if status == 200:
                    break
                try:
                    accepted.append(listener.accept()[0])
                except socket.timeout:
                    pass
                time.sleep(0.2)
            answer = json.loads(body)
            assert status == 200 and answer["checks"]["upstreams_failing"] == [], body
            assert answer["checks"]["upstreams_unreachable"] == [], body
            while True:
                try:
                    accepted.append(listener.accept()[0])
                except socket.timeout:
                    break
            assert accepted, "the probe never connected"
            for connection in accepted:
                connection.settimeout(0.5)
                try:
                    assert connection.recv(100) == b"", "a probe must send no request"
                except socket.timeout:
                    pass
        finally:
            for connection in accepted:
                connection.close()
            listener.close()
    finally:
        gateway.stop()
    failures = [line for line in gateway.lines if "upstream request failed" in line]
    assert len(failures) == 2, failures
    assert "tenant=acme" in failures[0] and "tenant=globex" in failures[1], failures
    # JSON-RPC 2.0: the error answers the request it was for (its id was read: the policy decided on it).
    wrong_ids = [(100 + index, answer.get("id")) for index, (_, answer) in enumerate(answers)
                 if answer.get("id") != 100 + index]
    assert not wrong_ids, f"(request id, error id) pairs that do not match: {wrong_ids[:3]}"


def test_a_reload_applies_identity_and_tls_together_or_neither(sdk_upstream, tmp_path):
    """Identity and TLS both say who a tenant's agents are: a reload whose TLS part is refused (a broken CRL) does not
    apply its identity part either (a new JWT key stays unknown); once the CRL is fixed, both apply."""
    import jwt
    secret = "n" * 40
    (tmp_path / "new.secret").write_text(secret)
    dev = str(ROOT / "certs-dev")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text().replace('"certs-dev/', f'"{dev}/'))
    config["policies"] = str(ROOT / "policies")
    shutil.copy(ROOT / "certs-dev" / "globex" / "ca.crl.pem", tmp_path / "globex.crl.pem")
    config["tenants"]["globex"]["crl"] = [str(tmp_path / "globex.crl.pem")]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    gateway = Gateway("--config", str(path), "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    token = jwt.encode({"iss": "https://issuer.mcpgw.dev/acme", "aud": "mcpgw", "sub": "bot1", "tenant": "acme",
                        "exp": int(time.time()) + 600}, secret, algorithm="HS256", headers={"kid": "acme-new"})

    INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}

    def status() -> int:
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "--cacert", str(ROOT / "certs-dev" / "gateway-ca.pem"), "-o", "/dev/null",
             "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
             "-H", "Accept: application/json, text/event-stream", "-d", json.dumps(INITIALIZE),
             f"https://localhost:{gateway.port}/mcp"], capture_output=True, text=True, timeout=30)
        return int(result.stdout or 0)
    try:
        assert status() == 401
        config["tenants"]["acme"]["jwt"]["keys"].append({"kid": "acme-new", "secret_file": str(tmp_path / "new.secret")})
        path.write_text(json.dumps(config))
        (tmp_path / "globex.crl.pem").write_text("-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
        code, body, _ = gateway.admin("POST", "/reload")
        answer = json.loads(body)
        assert code == 500 and answer["parts"]["tls"]["ok"] is False, answer
        assert answer["parts"]["identity"]["ok"] is False and "not applied" in answer["parts"]["identity"]["detail"], answer
        assert status() == 401, "the new key was put in force although the TLS part was refused"

        shutil.copy(ROOT / "certs-dev" / "globex" / "ca.crl.pem", tmp_path / "globex.crl.pem")
        code, body, _ = gateway.admin("POST", "/reload")
        answer = json.loads(body)
        assert answer["parts"]["tls"]["ok"] is True and answer["parts"]["identity"]["ok"] is True, answer
        assert status() == 200
    finally:
        assert gateway.stop() == 0, gateway.stderr


# --- found by the review of the command line and configuration (2026-11-27) --------------------------------------

def test_client_auth_required_without_any_client_ca_is_refused_not_weakened(tmp_path):
    config = dev_config(tmp_path)
    config["tls"]["client_auth"] = "required"
    for tenant in config["tenants"].values():
        tenant.pop("client_ca")
        tenant.pop("crl")
    problem = only_problem(write_config(tmp_path, config))
    assert "tls.client_auth: required, but no tenant has client_ca" in problem, problem


@pytest.mark.parametrize("value, expected", [("", "audit_log: must name a file"), ("logs/", "audit_log: must name a file")])
def test_an_audit_log_that_names_no_file_is_a_clear_error(tmp_path, value, expected):
    config = dev_config(tmp_path)
    config["audit_log"] = value
    # Relative to a configuration file given by a relative path: the empty name used to crash the check.
    (tmp_path / "rel.json").write_text(json.dumps(config))
    result = subprocess.run([mcpgw_binary(), "config", "check", "rel.json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert expected in result.stdout + result.stderr


@pytest.mark.parametrize("header", ["Host", "content-length", "Transfer-Encoding", "Mcp-Session-Id", "Mcp-Method",
                                    "mcp-param-path", "Content-Encoding", "X Bad", ""])
def test_a_credential_header_the_gateway_writes_or_that_frames_the_request_is_refused(tmp_path, header):
    config = dev_config(tmp_path)
    (tmp_path / "secret.txt").write_text("s3cret\n")
    config["tenants"]["acme"]["upstream"] = {"url": "http://127.0.0.1:9/mcp", "credential_header": header,
                                             "credential_file": str(tmp_path / "secret.txt")}
    problem = only_problem(write_config(tmp_path, config))
    assert "tenants.acme.upstream.credential_header:" in problem, problem


def test_a_credential_with_a_line_break_inside_is_refused(tmp_path):
    config = dev_config(tmp_path)
    (tmp_path / "secret.txt").write_text("abc\r\nX-Injected: 1\n")
    config["tenants"]["acme"]["upstream"] = {"url": "http://127.0.0.1:9/mcp", "credential_header": "Authorization",
                                             "credential_file": str(tmp_path / "secret.txt")}
    problem = only_problem(write_config(tmp_path, config))
    assert "credential_file" in problem and "line break" in problem, problem
    (tmp_path / "secret.txt").write_text("Bearer abc\n")
    status, lines, stderr = config_check(write_config(tmp_path, config, "ok.json"))
    assert status == 0, (lines, stderr)


def test_serve_crl_flag_is_not_dropped_for_an_implicit_dev_configuration(tmp_path):
    # A folder with an mcpgw.dev.json that has no CRLs: `serve --crl` there must not quietly use that file instead.
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    for tenant in config["tenants"].values():
        tenant.pop("crl")
    (tmp_path / "mcpgw.dev.json").write_text(json.dumps(config))
    for name in ("certs-dev", "policies"):
        (tmp_path / name).symlink_to(ROOT / name)
    process, port, lines = start_serve("--listen", "127.0.0.1:0", "--crl", str(CERTS / "acme" / "ca.crl.pem"), cwd=tmp_path)
    try:
        assert not any("config.file=mcpgw.dev.json" in line for line in lines), "".join(lines)
        result = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert",
             str(CERTS / "gateway-ca.pem"), "--cert", str(CERTS / "acme/agents/revoked.pem"), "--key",
             str(CERTS / "acme/agents/revoked.key"), f"https://localhost:{port}/healthz"],
            capture_output=True, text=True, timeout=30)
        assert result.stdout == "000", (result.stdout, result.stderr)  # refused in the handshake: revoked
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.mark.parametrize("claim", ["sub", "exp", "aud", "iss", "scope"])
def test_issue_token_refuses_a_tenant_claim_the_token_carries_itself(claim):
    result = subprocess.run([mcpgw_binary(), "issue-token", "--tenant", "acme", "--agent", "bot1", "--tenant-claim", claim],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 64 and f"--tenant-claim '{claim}' cannot be used" in result.stderr, result.stderr


def test_policy_tools_refuse_methods_the_gateway_never_decides(mcpgw):
    status, out = mcpgw("policy", "explain", "--policies", "policies", "--tenant", "acme", "--agent", "bot1",
                        "--method", "tools/list")
    assert status == 64 and out == ""
    status, out = mcpgw("policy", "evaluate", "--policies", "policies",
                        stdin='{"tenant":"acme","agent":"bot1","method":"resources/subscribe","target":"file:///x"}\n')
    assert status == 0 and "decided as resources/read" in json.loads(out)["error"], out


def test_policy_tools_read_a_single_policy_file(mcpgw, tmp_path):
    document = tmp_path / "classic.json"
    document.write_text(json.dumps({"default_action": "deny", "rules": [{"id": "R1", "action": "allow", "tools": ["x"]}]}))
    status, out = mcpgw("policy", "check", str(document))
    assert status == 0 and "ok:" in out, out
    status, out = mcpgw("policy", "explain", "--policies", str(document), "--tenant", "acme", "--agent", "bot1",
                        "--tool", "x", "--json")
    assert status == 0 and json.loads(out)["rule"] == "R1", out
    status, out = mcpgw("policy", "evaluate", "--policies", str(document),
                        stdin='{"tenant":"globex","agent":"a","tool":"y"}\n')
    assert status == 0 and json.loads(out)["decision"] == "deny", out


def test_a_reload_needs_policies_for_the_configured_tenants_as_the_file_has_them_now(sdk_upstream, tmp_path):
    config = dev_config(tmp_path)
    path = write_config(tmp_path, config)
    gateway = Gateway("--config", path, "--listen", "127.0.0.1:0", "--upstream", sdk_upstream,
                      "--audit-log", str(tmp_path / "audit.log"), admin_port=free_port())
    try:
        # globex's policies removed while the configuration still has globex: refused, as start-up would be.
        policies = tmp_path / "policies"
        shutil.move(str(policies / "globex"), str(tmp_path / "globex-policies"))
        status, body, _ = gateway.admin("POST", "/reload")
        part = json.loads(body)["parts"]["policies"]
        assert status == 500 and part["ok"] is False and "no policies for tenant globex" in part["detail"], body
        # globex removed from the configuration too: its policies are no longer needed (found by review: the tenants
        # at start were required for good, and every later reload was refused).
        del config["tenants"]["globex"]
        write_config(tmp_path, config)
        status, body, _ = gateway.admin("POST", "/reload")
        assert json.loads(body)["parts"]["policies"]["ok"] is True, body
    finally:
        gateway.stop()
