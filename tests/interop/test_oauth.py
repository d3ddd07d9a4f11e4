"""mcpgw as an OAuth 2.0 protected resource, end to end.

- The official MCP Python SDK's OAuth client (client credentials, and authorization code with PKCE and dynamic
  client registration) starts from nothing but the tenant endpoint's URL: 401 → `resource_metadata` (RFC 9728) →
  the test authorization server's metadata (RFC 8414) → a token for the `resource` (RFC 8707) → tools through the
  gateway, whose keys come from the same authorization server by discovery.
- Signing keys fetched over HTTPS: rotation without SIGHUP, the unknown-`kid` refetch rate limit under a flood, the
  last good keys kept while the JWKS endpoint fails.
- What an unauthenticated caller learns (general reasons only), audiences (RFC 8707), and `insufficient_scope`.

The authorization server / JWKS host is oauth_server.py (HTTPS with a throwaway CA the gateway gets as `ca_file`).
"""
import concurrent.futures
import json
import math
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import jwt
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from conftest import ROOT, dev_file, mcpgw_binary
from oauth_server import AuthorizationServer, SigningKey, make_tls
from test_mcp_sdk_conformance import start_upstream
from test_serve_cli import start

DEV_ISSUER = "https://issuer.mcpgw.dev/acme"
ACCEPT = "application/json, text/event-stream"
WAIT = 10  # seconds: the longest any single wait lasts
READ_FILE = ("read_file", {"path": "readme.txt"})
UPSTREAM_TEXT = "hello from the SDK upstream"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# MARK: - the gateway


class Gateway:
    """A running `mcpgw serve` whose stderr and stdout are drained (and kept) in the background."""

    def __init__(self, config_path, port: int, audit, upstream: str):
        self.port = port
        self.audit = audit
        self.process, bound, lines = start("--config", str(config_path), "--listen", f"127.0.0.1:{port}",
                                           "--upstream", upstream, "--audit-log", str(audit))
        assert bound == port
        self.lines = list(lines)
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._drain, args=(stream,), daemon=True)
                         for stream in (self.process.stderr, self.process.stdout)]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream):
        for line in stream:
            with self._lock:
                self.lines.append(line)

    @property
    def origin(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def resource(self) -> str:
        return self.origin + "/tenants/acme/mcp"

    @property
    def metadata_url(self) -> str:
        return self.origin + "/.well-known/oauth-protected-resource/tenants/acme/mcp"

    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def log_count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        deadline = time.time() + timeout
        while self.log_count(text) < count:
            assert time.time() < deadline, f"gateway never logged {text!r} x{count}:\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def records(self, minimum: int = 0, since: int = 0) -> list[dict]:
        """Audit records (from line `since` on), waiting (bounded) until there are at least `minimum`."""
        deadline = time.time() + WAIT
        while True:
            text = self.audit.read_text() if self.audit.exists() else ""
            lines = text.splitlines()
            complete = lines if text.endswith("\n") else lines[:-1]
            records = [json.loads(line) for line in complete[since:]]
            if len(records) >= minimum or time.time() > deadline:
                return records
            time.sleep(0.05)

    def wait_record(self, predicate, since: int = 0) -> dict:
        """The first audit record (from line `since` on) that satisfies `predicate`, waiting for it (bounded)."""
        deadline = time.time() + WAIT
        while True:
            found = [r for r in self.records(since=since) if predicate(r)]
            if found:
                return found[0]
            assert time.time() < deadline, f"no such audit record in {self.records(since=since)}"
            time.sleep(0.05)

    def audited(self, send):
        """`send()`'s result and the one audit record it caused (the gateway writes it as the exchange ends)."""
        before = self.settled_audit_length()
        result = send()
        records = self.records(minimum=1, since=before)
        assert len(records) == 1, records
        return result, records[0]

    def settled_audit_length(self) -> int:
        """The audit log's length once records of earlier exchanges (written as they end) stopped arriving."""
        length, stable_since, deadline = self.audit_length(), time.time(), time.time() + WAIT
        while time.time() - stable_since < 0.2 and time.time() < deadline:
            time.sleep(0.05)
            if (current := self.audit_length()) != length:
                length, stable_since = current, time.time()
        return length

    def audit_length(self) -> int:
        return len(self.audit.read_text().splitlines()) if self.audit.exists() else 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()
                self.process.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=5)
        assert self.process.returncode == 0, self.log()[-3000:]


def write_config(directory, port: int, *, acme_jwt: dict | None = None, acme_oauth: dict | None = None,
                 globex_oauth: dict | None = None):
    """The dev configuration with absolute paths, `identity.public_url`, and acme's (and globex's) OAuth settings."""
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["policies"] = str(ROOT / "policies")
    config["tls"] = {**config["tls"], "certificate_chain": str(ROOT / "certs-dev/server.pem"),
                     "private_key": str(ROOT / "certs-dev/server.key")}
    for tenant in config["tenants"].values():
        tenant["client_ca"] = [str(ROOT / p) for p in tenant["client_ca"]]
        tenant["crl"] = [str(ROOT / p) for p in tenant["crl"]]
        for key in tenant["jwt"]["keys"]:
            field = next(k for k in key if k.endswith("_file"))
            key[field] = str(ROOT / key[field])
    config["identity"]["public_url"] = f"https://localhost:{port}"
    if acme_jwt is not None:
        config["tenants"]["acme"]["jwt"] = acme_jwt
    if acme_oauth is not None:
        config["tenants"]["acme"]["oauth"] = acme_oauth
    if globex_oauth is not None:
        config["tenants"]["globex"]["oauth"] = globex_oauth
    path = directory / "mcpgw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


# MARK: - requests


def trust(*extra_cas: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ROOT / "certs-dev" / "gateway-ca.pem"))
    for ca in extra_cas:
        context.load_verify_locations(cafile=ca)
    return context


class Reply:
    def __init__(self, response: httpx2.Response):
        self.status = response.status_code
        self.headers = response.headers
        self.challenge = response.headers.get("www-authenticate", "")
        self.text = response.text
        self.message = None
        if "text/event-stream" in response.headers.get("content-type", ""):
            data = [line[5:].strip() for line in self.text.splitlines() if line.startswith("data:")]
            self.message = json.loads(data[-1]) if data else None
        elif self.text.strip():
            try:
                self.message = json.loads(self.text)
            except ValueError:
                pass

    @property
    def error(self) -> dict | None:
        return (self.message or {}).get("error")

    @property
    def code(self) -> str | None:
        """`error.data.code` of a refusal."""
        return ((self.error or {}).get("data") or {}).get("code")

    def __repr__(self):
        return f"<{self.status} {self.challenge!r} {self.text[:600]!r}>"


def rpc(port: int, token: str | None = None, call=READ_FILE, path: str = "/tenants/acme/mcp",
        client: httpx2.Client | None = None) -> Reply:
    """POSTs one JSON-RPC tools/call (no session needed: the upstream is stateless)."""
    headers = {"Content-Type": "application/json", "Accept": ACCEPT}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": call[0], "arguments": call[1]}}
    if client is not None:
        return Reply(client.post(f"https://localhost:{port}{path}", json=body, headers=headers))
    with httpx2.Client(verify=trust(), timeout=WAIT) as fresh:
        return Reply(fresh.post(f"https://localhost:{port}{path}", json=body, headers=headers))


def assert_read_file_answered(reply: Reply) -> None:
    """The call was authenticated, allowed and answered by the upstream."""
    assert reply.status == 200, reply
    assert reply.error is None, reply
    assert reply.message["result"]["content"][0]["text"] == UPSTREAM_TEXT, reply


def assert_refused(reply: Reply, code: str) -> None:
    assert reply.status == 401, reply
    assert reply.challenge.startswith('Bearer realm="mcpgw"'), reply
    assert reply.error["message"].startswith("authentication failed: "), reply
    assert reply.code == code, reply


def dev_token(**overrides) -> str:
    """A token for the dev configuration (acme-rs256), overridable claim by claim (None removes one)."""
    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "sub": "bot1", "aud": "mcpgw", "tenant": "acme", "iat": now, "exp": now + 600,
              "jti": str(uuid.uuid4())}
    kid = overrides.pop("kid", "acme-rs256")
    key = overrides.pop("key", dev_file("jwt/acme-rs256.key"))
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


# MARK: - fixtures


@pytest.fixture(scope="module")
def stateless_upstream():
    process, url = start_upstream("stateless")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def tls(tmp_path):
    """(CA file, certificate, key) of the test's HTTPS servers."""
    directory = tmp_path / "tls"
    directory.mkdir()
    return make_tls(directory)


@pytest.fixture
def auth_server(tls):
    server = AuthorizationServer(tls[1], tls[2]).start()
    yield server
    try:
        server.stop()
    except Exception:
        pass


@pytest.fixture
def gateways():
    """Starts gateways on demand; stops them all (SIGTERM) at the end."""
    running = []

    def launch(*args, **kwargs) -> Gateway:
        gateway = Gateway(*args, **kwargs)
        running.append(gateway)
        return gateway

    yield launch
    for gateway in running:
        gateway.stop()


def remote_keys_gateway(gateways, tmp_path, server: AuthorizationServer, ca: str, upstream: str, **jwt_settings) -> Gateway:
    """A gateway whose acme keys come from `server`'s /jwks.json (jwks_uri), with acme's OAuth resource."""
    port = free_port()
    acme_jwt = {"issuers": [server.issuer], "jwks_uri": server.issuer + "/jwks.json", "ca_file": ca, **jwt_settings}
    config = write_config(tmp_path, port, acme_jwt=acme_jwt,
                          acme_oauth={"authorization_servers": [server.issuer], "scopes_supported": ["tools:read"]})
    gateway = gateways(config, port, tmp_path / "audit.log", upstream)
    gateway.wait_log("signing keys fetched")
    return gateway


# MARK: - 1. the SDK's OAuth client, end to end


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def make_provider(grant: str, server_url: str, issuer: str, context: ssl.SSLContext):
    storage = MemoryStorage()
    if grant == "client_credentials":
        return ClientCredentialsOAuthProvider(server_url, storage, client_id="bot1", client_secret="bot1-secret",
                                              issuer=issuer)
    redirect_uri = "http://127.0.0.1:9/callback"  # never contacted: the redirect is read from the 302 itself
    answer: dict = {}

    async def redirect_handler(authorization_url: str) -> None:
        # The user agent: the test AS approves at once and redirects to the client's redirect URI.
        async with httpx2.AsyncClient(verify=context, timeout=WAIT, follow_redirects=False) as browser:
            response = await browser.get(authorization_url)
        assert response.status_code == 302, response.text
        location = response.headers["location"]
        assert location.startswith(redirect_uri + "?"), location
        answer.update({k: v[0] for k, v in parse_qs(urlsplit(location).query).items()})

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"), iss=answer.get("iss"))

    metadata = OAuthClientMetadata(redirect_uris=[redirect_uri], token_endpoint_auth_method="none",
                                   grant_types=["authorization_code"], client_name="mcpgw interop test")
    return OAuthClientProvider(server_url, metadata, storage, redirect_handler, callback_handler)


async def sdk_session(url: str, provider, context: ssl.SSLContext, exchanges: list) -> dict:
    async def seen(response: httpx2.Response) -> None:
        request = response.request
        exchanges.append((request.method, str(request.url), response.status_code,
                          request.headers.get("authorization", ""), response.headers.get("www-authenticate", "")))

    outcome = {}
    http = httpx2.AsyncClient(auth=provider, verify=context, timeout=httpx2.Timeout(WAIT, read=3 * WAIT),
                              event_hooks={"response": [seen]})
    async with http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                info = await session.initialize()
                outcome["server"] = info.server_info.name
                outcome["tools"] = sorted(tool.name for tool in (await session.list_tools()).tools)
                outcome["read"] = (await session.call_tool(*READ_FILE)).content[0].text
    return outcome


@pytest.fixture(scope="module")
def json_upstream():
    process, url = start_upstream("json")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize("grant", ["client_credentials", "authorization_code"])
def test_sdk_oauth_client_discovers_authorizes_and_calls_through_the_gateway(
        grant, tmp_path, tls, auth_server, gateways, json_upstream):
    ca = tls[0]
    port = free_port()
    # acme's keys: the authorization server's, found by discovery from its issuer (no key in the configuration).
    config = write_config(
        tmp_path, port, acme_jwt={"issuers": [auth_server.issuer], "discovery": True, "ca_file": ca},
        acme_oauth={"authorization_servers": [auth_server.issuer], "scopes_supported": ["tools:read"]})
    gateway = gateways(config, port, tmp_path / "audit.log", json_upstream)
    gateway.wait_log("signing keys fetched")
    # The gateway found the JWKS through the issuer's metadata, not through configuration.
    assert ("GET", "/.well-known/openid-configuration") in auth_server.paths()
    assert ("GET", "/jwks.json") in auth_server.paths()

    context = trust(ca)
    provider = make_provider(grant, gateway.resource, auth_server.issuer, context)
    exchanges: list = []
    outcome = anyio.run(sdk_session, gateway.resource, provider, context, exchanges)
    assert outcome == {"server": "sdk-upstream", "tools": ["list_files", "read_file"], "read": UPSTREAM_TEXT}

    # The flow as the SDK walked it: 401 → the metadata named by resource_metadata → the AS's RFC 8414 metadata →
    # (registration, authorization) → token → the MCP request again, now with the token.
    steps = [exchange[:3] for exchange in exchanges]
    as_base = auth_server.issuer
    expected = [("POST", gateway.resource, 401), ("GET", gateway.metadata_url, 200),
                ("GET", as_base + "/.well-known/oauth-authorization-server", 200)]
    if grant == "authorization_code":
        expected.append(("POST", as_base + "/register", 201))
    expected += [("POST", as_base + "/token", 200), ("POST", gateway.resource, 200)]
    assert steps[:len(expected)] == expected, steps
    assert exchanges[len(expected) - 1][3].startswith("Bearer ")
    # The SDK was sent to the metadata by the challenge itself (RFC 9728 §5.1), scope included.
    assert f'resource_metadata="{gateway.metadata_url}"' in exchanges[0][4], exchanges[0]
    assert 'scope="tools:read"' in exchanges[0][4], exchanges[0]
    assert all(status in (200, 202) for _, url, status in steps[len(expected):] if url == gateway.resource), steps

    # The token was asked for this resource (RFC 8707) and issued for it.
    prm = httpx2.get(gateway.metadata_url, verify=context, timeout=WAIT).json()
    assert prm["resource"] == gateway.resource
    [token_request] = auth_server.token_requests
    assert token_request["grant_type"] == grant
    assert token_request["resource"] == prm["resource"]
    if grant == "authorization_code":
        [authorize] = auth_server.authorize_requests
        assert authorize["resource"] == prm["resource"] and authorize["code_challenge_method"] == "S256"
        assert authorize["scope"] == "tools:read"  # from the challenge's scope
    else:
        assert token_request["scope"] == "tools:read"
    assert auth_server.issued[-1]["aud"] == gateway.resource

    record = gateway.wait_record(lambda r: r.get("method") == "tools/call" and r.get("target") == "read_file")
    assert record["decision"] == "allow", record
    assert (record["auth_method"], record["tenant"], record["agent"]) == ("jwt", "acme", "bot1"), record
    records = gateway.records()
    # The unauthenticated first request was audited as such, and the metadata fetch as allowed.
    assert any(r["decision"] == "authentication_failed" and r.get("rule") == "no_credentials" for r in records), records
    assert any(r.get("rule") == "oauth_metadata" and r["decision"] == "allow" for r in records), records


# MARK: - 2. rotation without SIGHUP


def test_rotated_keys_are_fetched_without_sighup(tmp_path, tls, auth_server, gateways, stateless_upstream):
    key_a, key_b = SigningKey("a"), SigningKey("b")
    auth_server.jwks_keys = [key_a.jwk()]
    auth_server.jwks_cache_control = "max-age=300"
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0], stateless_upstream, jwks_min_refetch_seconds=1)
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_a)))
    # Not published yet: refused.
    assert_refused(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_b)), "unknown_key")

    auth_server.jwks_keys = [key_b.jwk()]
    time.sleep(1.2)  # past the minimum refetch interval
    fetches = auth_server.hits("/jwks.json")
    # A token signed by the new key makes the gateway fetch the set again — no SIGHUP, no restart.
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_b)))
    assert auth_server.hits("/jwks.json") == fetches + 1
    # A is no longer published, so a token signed by it is refused.
    reply, refusal = gateway.audited(lambda: rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_a)))
    assert_refused(reply, "unknown_key")
    assert "reason=unknown kid" in gateway.log()  # why the keys were fetched again
    assert refusal["decision"] == "authentication_failed" and refusal["rule"] == "unknown_kid", refusal
    assert "'a'" in refusal["reason"], refusal


def test_verify_token_fetches_the_keys_serve_fetches(tmp_path, tls, auth_server, gateways, stateless_upstream):
    """Found by review: `verify-token --config` refused, as signed by an unknown key, a token `serve` accepted with
    the same configuration, its keys being fetched over HTTPS."""
    key = SigningKey("a")
    auth_server.jwks_keys = [key.jwk()]
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0], stateless_upstream)
    token = auth_server.mint(aud=gateway.resource, key=key)
    assert_read_file_answered(rpc(gateway.port, token))
    result = subprocess.run([mcpgw_binary(), "verify-token", "--config", str(tmp_path / "mcpgw.json"), token],
                            capture_output=True, text=True, timeout=60)
    answer = json.loads(result.stdout)
    assert result.returncode == 0 and answer["accepted"] is True and answer["tenant"] == "acme", (result.stdout, result.stderr)
    assert answer["kid"] == "a", answer


def test_a_token_verified_before_its_key_was_withdrawn_is_refused_after(
        tmp_path, tls, auth_server, gateways, stateless_upstream):
    """A withdrawn key (e.g. compromised) stops authenticating — also the very token that was accepted with it."""
    key_a, key_b = SigningKey("a"), SigningKey("b")
    auth_server.jwks_keys = [key_a.jwk()]
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0], stateless_upstream, jwks_min_refetch_seconds=1)
    token_a = auth_server.mint(aud=gateway.resource, key=key_a)
    assert_read_file_answered(rpc(gateway.port, token_a))
    auth_server.jwks_keys = [key_b.jwk()]
    time.sleep(1.2)
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_b)))
    # The set in force now is {b}: a fresh A token is refused …
    assert_refused(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_a)), "unknown_key")
    # … and so is the A token accepted (and cached) before the rotation.
    assert_refused(rpc(gateway.port, token_a), "unknown_key")


class _ListeningUpstream(BaseHTTPRequestHandler):
    """An upstream whose GET is a server-to-client SSE stream (one event, then a comment every 0.2 s until the
    gateway goes away, at most 60 s) and whose POST answers any call with UPSTREAM_TEXT."""
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
            self.wfile.flush()
            for _ in range(300):
                time.sleep(0.2)
                self.wfile.write(b": still here\n\n")
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
            "content": [{"type": "text", "text": UPSTREAM_TEXT}], "isError": False}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_listening_stream_ends_when_its_tokens_key_is_withdrawn_from_the_fetched_set(
        tmp_path, tls, auth_server, gateways):
    """`mcpgw serve` end to end: the key set fetched over HTTPS drops key A, and a GET stream opened with an A token
    ends (recorded as `credentials_refused`), while the stream stays open for as long as A is published."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _ListeningUpstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    key_a, key_b = SigningKey("a"), SigningKey("b")
    auth_server.jwks_keys = [key_a.jwk()]
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0],
                                  f"http://127.0.0.1:{upstream.server_address[1]}/mcp", jwks_min_refetch_seconds=1)
    token_a = auth_server.mint(aud=gateway.resource, key=key_a)
    raw = socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT)
    stream = trust().wrap_socket(raw, server_hostname="localhost")
    try:
        stream.sendall((f"GET /tenants/acme/mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
                        f"Authorization: Bearer {token_a}\r\n\r\n").encode())
        received = b""
        deadline = time.time() + WAIT
        while b"data:" not in received:
            assert time.time() < deadline, received
            chunk = stream.recv(65536)
            assert chunk, "the stream ended before its first event: " + received.decode(errors="replace")
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        # A fetch that still publishes A (a B token nudges a refetch) leaves the stream alone.
        auth_server.jwks_keys = [key_a.jwk(), key_b.jwk()]
        time.sleep(1.2)
        assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_b)))
        gateway.wait_log("signing keys fetched", count=2)
        stream.settimeout(1.0)
        assert _still_open(stream), "the stream ended although its key is still published"
        # A is withdrawn; the next fetch (nudged again) ends the stream.
        auth_server.jwks_keys = [key_b.jwk()]
        time.sleep(1.2)
        assert_refused(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key_a, kid="unknown")), "unknown_key")
        gateway.wait_log("signing keys fetched", count=3)
        deadline = time.time() + WAIT
        while _still_open(stream):
            assert time.time() < deadline, "the stream outlived the withdrawal of its token's key"
    finally:
        stream.close()
        upstream.shutdown()
    record = gateway.wait_record(lambda r: r.get("rule") == "credentials_refused")
    assert record["decision"] == "authentication_failed" and record["method"] == "stream", record
    assert (record["tenant"], record["agent"], record["auth_method"]) == ("acme", "bot1", "jwt"), record
    assert "no longer accepted" in record["reason"], record


def _still_open(stream: ssl.SSLSocket) -> bool:
    """Reads what arrives for up to the socket's timeout; False once the gateway has closed the stream."""
    try:
        return stream.recv(65536) != b""
    except (TimeoutError, socket.timeout):
        return True
    except (ssl.SSLError, OSError):
        return False


# MARK: - 3. the refetch rate limit under a flood of unknown kids


def test_a_reload_holds_the_identity_settings_only_a_restart_applies(tmp_path, gateways, stateless_upstream):
    """Found by review: a reload that reported `identity.public_url` (or `mcp_path`) as applied only by a restart built
    the authenticator from it all the same, and every OAuth token (audience: the resource still published) got 401.
    The reload now applies what it re-reads and holds the rest at its running values."""
    port = free_port()
    config = write_config(tmp_path, port, acme_oauth={"authorization_servers": [DEV_ISSUER]})
    gateway = gateways(config, port, tmp_path / "audit.log", stateless_upstream)
    token = dev_token(aud=gateway.resource)
    assert_read_file_answered(rpc(port, token))
    for section, value in (("identity", {"public_url": "https://mcp.example.com"}), ("mcp_path", "/v2/mcp")):
        document = json.loads(config.read_text())
        if isinstance(value, dict):
            document[section].update(value)
        else:
            document[section] = value
        config.write_text(json.dumps(document, indent=2))
        before = gateway.log_count("identity settings reloaded")
        gateway.process.send_signal(signal.SIGHUP)
        gateway.wait_log("identity settings reloaded", count=before + 1)
        # The token for the resource in force is still accepted, and the metadata still names that resource.
        assert_read_file_answered(rpc(port, token))
        with httpx2.Client(verify=trust(), timeout=WAIT) as client:
            assert client.get(gateway.metadata_url).json()["resource"] == gateway.resource


def test_unknown_kid_flood_causes_at_most_one_refetch_per_interval(tmp_path, tls, auth_server, gateways, stateless_upstream):
    interval = 3
    key = SigningKey("good")
    auth_server.jwks_keys = [key.jwk()]
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0], stateless_upstream,
                                  jwks_min_refetch_seconds=interval)
    assert auth_server.hits("/jwks.json") == 1
    first_fetch = auth_server.requests[0]["time"]
    # Let the interval since the start-up fetch pass, so the flood's first unknown kid may (and must) refetch.
    time.sleep(max(0.0, first_fetch + interval + 0.2 - time.monotonic()))

    total, workers = 200, 8
    tokens = [auth_server.mint(aud=gateway.resource, key=key, kid="unknown-" + secrets.token_hex(6)) for _ in range(total)]
    flood_start = time.monotonic()

    def worker(index: int) -> list[Reply]:
        replies = []
        with httpx2.Client(verify=trust(), timeout=WAIT) as client:
            for position in range(index, total, workers):
                delay = flood_start + position * 0.01 - time.monotonic()  # 200 requests over ~2 s
                if delay > 0:
                    time.sleep(delay)
                replies.append(rpc(gateway.port, tokens[position], client=client))
        return replies

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        replies = [reply for batch in pool.map(worker, range(workers)) for reply in batch]
    time.sleep(0.3)  # a refetch the last requests started has reached the server by now
    elapsed = time.monotonic() - flood_start
    during = auth_server.hits("/jwks.json", since=flood_start)

    assert len(replies) == total
    assert all(reply.status == 401 and reply.code == "unknown_key" for reply in replies), \
        [r for r in replies if r.status != 401 or r.code != "unknown_key"][:3]
    bound = math.floor(elapsed / interval) + 1
    assert 1 <= during <= bound, (during, bound, elapsed)
    assert auth_server.hits("/jwks.json") <= 1 + bound
    # The flood did not disturb the keys in force.
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key)))
    records = gateway.records(minimum=total + 1)
    flood_records = [r for r in records if r.get("rule") == "unknown_kid"]
    assert len(flood_records) == total, len(flood_records)


# MARK: - 4. the last good keys stay while the JWKS endpoint fails


@pytest.mark.parametrize("failure", ["status_500", "garbage", "down"])
def test_failing_jwks_endpoint_keeps_the_last_good_keys(failure, tmp_path, tls, auth_server, gateways, stateless_upstream):
    key = SigningKey("only")
    auth_server.jwks_keys = [key.jwk()]
    auth_server.jwks_cache_control = "max-age=1"
    gateway = remote_keys_gateway(gateways, tmp_path, auth_server, tls[0], stateless_upstream,
                                  jwks_min_refetch_seconds=1, jwks_lifetime_seconds=60)
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key)))
    # With max-age=1 the gateway refreshes about every second.
    deadline = time.time() + WAIT
    while auth_server.hits("/jwks.json") < 2:
        assert time.time() < deadline, "the gateway did not refresh the key set after max-age"
        time.sleep(0.1)

    broken_at = time.time()
    if failure == "status_500":
        auth_server.jwks_status = 500
    elif failure == "garbage":
        auth_server.jwks_body = b"{not json"
    else:
        auth_server.stop()
    # Wait for two failed fetches (background refreshes, nudged by unknown kids, which may refetch every second).
    failed = "signing key fetch failed; the last good keys stay in force"
    deadline = time.time() + 20
    while gateway.log_count(failed) < 2 or time.time() < broken_at + 3:
        assert time.time() < deadline, gateway.log()[-3000:]
        reply = rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key, kid="nudge-" + secrets.token_hex(4)))
        assert_refused(reply, "unknown_key")
        time.sleep(1.1)
    # A fresh token (not in the verified-token cache) signed by the last good key still works.
    assert_read_file_answered(rpc(gateway.port, auth_server.mint(aud=gateway.resource, key=key)))


# MARK: - 5-7. one gateway with the dev keys and OAuth resources for acme and globex


@pytest.fixture(scope="module")
def dev_gateway(tmp_path_factory, stateless_upstream):
    directory = tmp_path_factory.mktemp("dev-gateway")
    port = free_port()
    config = write_config(
        directory, port,
        acme_oauth={"authorization_servers": ["https://auth.acme.example"], "scopes_supported": ["tools:read"]},
        globex_oauth={"authorization_servers": ["https://auth.globex.example"], "scopes_supported": ["tools:read"]})
    gateway = Gateway(config, port, directory / "audit.log", stateless_upstream)
    yield gateway
    gateway.stop()


def confused_token() -> str:
    """alg HS256 with the RS256 key's kid, 'signed' with the public key's PEM as the HMAC secret."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "sub": "bot1", "aud": "mcpgw", "tenant": "acme", "exp": now + 600}
    signing_input = b64(json.dumps({"alg": "HS256", "kid": "acme-rs256"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(dev_file("jwt/acme-rs256.pub"), signing_input.encode(), hashlib.sha256).digest())


def unsigned_token(signature: str) -> str:
    import base64

    def b64(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": DEV_ISSUER, "sub": "bot1", "aud": "mcpgw", "tenant": "acme", "exp": now + 600}
    return b64({"alg": "none", "kid": "acme-rs256"}) + "." + b64(claims) + "." + signature


# (name, token maker, public code, audit rule, a piece of the audit reason)
FAILURES = [
    ("no credentials", lambda: None, "no_credentials", "no_credentials", "no bearer token"),
    ("expired", lambda: dev_token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
     "token_expired", "token_expired", "token expired at"),
    ("bad signature", lambda: dev_token(key=dev_file("jwt/globex-rs256.key")), "bad_signature", "bad_signature",
     "signature does not verify"),
    ("unknown kid", lambda: dev_token(kid="kid-nobody-knows"), "unknown_key", "unknown_kid", "kid-nobody-knows"),
    ("wrong audience", lambda: dev_token(aud="someone-else"), "wrong_audience", "wrong_audience", "'mcpgw'"),
    ("untrusted issuer", lambda: dev_token(iss="https://evil.example/acme"), "untrusted_issuer", "wrong_issuer",
     "https://evil.example/acme"),
    ("garbage", lambda: "this-is-not-a-jwt", "malformed_token", "malformed_token", "malformed token"),
    ("alg none, unsigned", lambda: unsigned_token(""), "malformed_token", "malformed_token", "unsigned"),
    ("alg none, with a signature", lambda: unsigned_token("c2lnbmF0dXJl"), "bad_signature", "algorithm_none", "none"),
    ("HS256 with the RS256 key's kid", confused_token, "bad_signature", "algorithm_mismatch", "RS256"),
]
CONFIGURATION = ["acme-rs256", "acme-hs256", "globex-rs256", "RS256", "HS256", "issuer.mcpgw.dev", DEV_ISSUER, "mcpgw"]


@pytest.mark.parametrize("path", ["/tenants/acme/mcp", "/mcp"])
def test_401_answers_reveal_no_configuration_and_the_audit_keeps_the_detail(dev_gateway, path):
    gateway = dev_gateway
    for name, make, public_code, rule, detail in FAILURES:
        reply, record = gateway.audited(lambda: rpc(gateway.port, make(), path=path))
        assert_refused(reply, public_code)
        visible = reply.text + "\n" + reply.challenge.replace('realm="mcpgw"', "", 1)
        for secret in CONFIGURATION:
            assert secret not in visible, (name, secret, reply)
        if path == "/tenants/acme/mcp":
            assert f'resource_metadata="{gateway.metadata_url}"' in reply.challenge, reply
        if public_code != "no_credentials":
            assert 'error="invalid_token"' in reply.challenge, reply
        # The audit record keeps what the caller is not told.
        assert record["decision"] == "authentication_failed" and record["rule"] == rule, (name, record)
        assert detail in record["reason"], (name, record)


def test_protected_resource_metadata_and_challenge(dev_gateway):
    gateway = dev_gateway
    document, record = gateway.audited(lambda: httpx2.get(gateway.metadata_url, verify=trust(), timeout=WAIT))
    assert (record["decision"], record["rule"]) == ("allow", "oauth_metadata"), record
    assert document.status_code == 200
    assert document.headers["content-type"].startswith("application/json")
    assert document.json() == {"resource": gateway.resource, "authorization_servers": ["https://auth.acme.example"],
                               "scopes_supported": ["tools:read"], "bearer_methods_supported": ["header"]}
    globex, _ = gateway.audited(lambda: httpx2.get(
        gateway.origin + "/.well-known/oauth-protected-resource/tenants/globex/mcp", verify=trust(), timeout=WAIT).json())
    assert globex["resource"] == gateway.origin + "/tenants/globex/mcp"
    reply, _ = gateway.audited(lambda: rpc(gateway.port, None))
    assert reply.status == 401
    assert reply.challenge == (f'Bearer realm="mcpgw", resource_metadata="{gateway.metadata_url}", scope="tools:read"')


# MARK: - 6. audiences (RFC 8707)


def test_token_audience_must_be_this_resource_or_the_configured_audience(dev_gateway):
    gateway = dev_gateway
    globex_resource = gateway.origin + "/tenants/globex/mcp"
    for audience in [globex_resource, "https://evil.example/mcp", ["https://evil.example/mcp", globex_resource]]:
        reply, record = gateway.audited(lambda: rpc(gateway.port, dev_token(aud=audience)))
        assert_refused(reply, "wrong_audience")
        assert record["rule"] == "wrong_audience", record
    for audience in [gateway.resource, "mcpgw", ["https://evil.example/mcp", gateway.resource]]:
        reply, record = gateway.audited(lambda: rpc(gateway.port, dev_token(aud=audience)))
        assert_read_file_answered(reply)
        assert (record["decision"], record["auth_method"], record["agent"]) == ("allow", "jwt", "bot1"), record


# MARK: - 7. insufficient_scope


def test_call_allowed_only_with_a_scope_gets_403_insufficient_scope(dev_gateway):
    gateway = dev_gateway
    query = ("query_db", {"sql": "select 1"})
    reply, record = gateway.audited(lambda: rpc(gateway.port, dev_token(aud=gateway.resource, scope="tools:write"), call=query))
    assert reply.status == 403, reply
    assert reply.challenge.startswith('Bearer realm="mcpgw", error="insufficient_scope", scope="tools:read"'), reply
    assert f'resource_metadata="{gateway.metadata_url}"' in reply.challenge, reply
    assert reply.error["data"]["required_scopes"] == ["tools:read"], reply
    assert (record["decision"], record["method"], record["target"]) == ("deny", "tools/call", "query_db"), record
    assert record["auth_method"] == "jwt" and record["agent"] == "bot1", record

    # Without any scope claim: the same.
    reply, record = gateway.audited(lambda: rpc(gateway.port, dev_token(aud=gateway.resource), call=query))
    assert reply.status == 403 and reply.error["data"]["required_scopes"] == ["tools:read"], reply
    assert record["decision"] == "deny", record
    # With tools:read the call is allowed (A2 audits it) and forwarded.
    reply, record = gateway.audited(lambda: rpc(gateway.port, dev_token(aud=gateway.resource, scope="tools:read"), call=query))
    assert reply.status == 200, reply
    assert "insufficient_scope" not in reply.challenge
    assert (reply.error or {}).get("code") != -31001, reply
    assert (record["decision"], record["rule"], record["target"]) == ("audit", "A2", "query_db"), record
