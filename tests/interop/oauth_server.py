"""A small OAuth 2.1 authorization server and JWKS host over HTTPS, for test_oauth.py.

- `make_tls(directory)`: a throwaway CA and a server certificate for `localhost` (and 127.0.0.1).
- `AuthorizationServer`: RFC 8414 / OpenID Connect discovery documents, `/jwks.json`, dynamic client registration
  (RFC 7591, `/register`), `/authorize` (authorization code with PKCE S256, approved at once, RFC 9207 `iss` in the
  redirect), `/token` (authorization_code and client_credentials). Tokens are RS256 JWTs whose `aud` is the
  RFC 8707 `resource` of the token request (a token request without one is refused: `invalid_target`).
  What the JWKS endpoint serves (keys, status, Cache-Control, garbage) can be changed while it runs, and every
  request is recorded (`requests`, `hits(path)`), so a test can see what the gateway and the SDK asked for.
"""
import base64
import datetime
import hashlib
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import RSAAlgorithm


def make_tls(directory) -> tuple[str, str, str]:
    """Writes ca.pem, server.pem (for localhost) and server.key into `directory`; returns their paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpgw interop test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class SigningKey:
    """An RSA key pair with a kid: signs RS256 tokens, publishes its public half as a JWK."""

    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        key = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        key.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return key

    def sign(self, claims: dict, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AuthorizationServer:
    """The test authorization server (see the module's description). `start()` before use, `stop()` after."""

    def __init__(self, cert: str, key: str, *, tenant: str = "acme", agent: str = "bot1"):
        self.tenant = tenant
        self.agent = agent
        self.signing_key = SigningKey("as-key-1")
        # What /jwks.json serves; tests change these while the server runs.
        self.jwks_keys: list[dict] = [self.signing_key.jwk()]
        self.jwks_status = 200
        self.jwks_cache_control: str | None = "max-age=300"
        self.jwks_body: bytes | None = None  # served instead of the key set when set (garbage)
        # Pre-registered client_credentials clients: client_id → secret.
        self.confidential_clients = {"bot1": "bot1-secret"}
        self.registered: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.requests: list[dict] = []  # {"method", "path", "params", "time"}
        self.token_requests: list[dict] = []
        self.authorize_requests: list[dict] = []
        self.issued: list[dict] = []  # claims of every token issued
        self._lock = threading.Lock()
        self._stopped = False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.app = self
        self.port = self._httpd.server_address[1]
        self.issuer = f"https://localhost:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # MARK: lifecycle and observation

    def start(self) -> "AuthorizationServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops answering and closes the listening socket (connections are then refused)."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def record(self, method: str, path: str, params: dict) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "params": params, "time": time.monotonic()})

    def hits(self, path: str, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"] == path and r["time"] >= since)

    def paths(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(r["method"], r["path"]) for r in self.requests]

    # MARK: tokens

    def mint(self, *, aud, scope: str | None = None, key: SigningKey | None = None, kid: str | None = None,
             lifetime: int = 600, **extra) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.agent, "aud": aud, "tenant": self.tenant, "iat": now,
                  "exp": now + lifetime, "jti": str(uuid.uuid4())}
        if scope:
            claims["scope"] = scope
        claims.update(extra)
        with self._lock:
            self.issued.append(claims)
        return (key or self.signing_key).sign(claims, kid)

    # MARK: documents

    def metadata(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "registration_endpoint": self.issuer + "/register",
            "jwks_uri": self.issuer + "/jwks.json",
            "scopes_supported": ["tools:read", "tools:write"],
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
        }


class _Handler(BaseHTTPRequestHandler):
    server_version = "test-as"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    @property
    def app(self) -> AuthorizationServer:
        return self.server.app

    def _send(self, status: int, body: bytes, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value, headers=()):
        self._send(status, json.dumps(value).encode(), headers=headers)

    def _error(self, status: int, error: str, description: str):
        self._json(status, {"error": error, "error_description": description})

    def do_GET(self):
        url = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        app = self.app
        app.record("GET", url.path, params)
        if url.path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
            return self._json(200, app.metadata())
        if url.path == "/jwks.json":
            headers = [("Cache-Control", app.jwks_cache_control)] if app.jwks_cache_control else []
            if app.jwks_status != 200:
                return self._json(app.jwks_status, {"error": "unavailable"})
            body = app.jwks_body if app.jwks_body is not None else json.dumps({"keys": list(app.jwks_keys)}).encode()
            return self._send(200, body, headers=headers)
        if url.path == "/authorize":
            return self._authorize(params)
        self._json(404, {"error": "not found"})

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        app = self.app
        if url.path == "/register":
            body = json.loads(raw or b"{}")
            app.record("POST", url.path, body)
            return self._register(body)
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        app.record("POST", url.path, form)
        if url.path == "/token":
            return self._token(form)
        self._json(404, {"error": "not found"})

    # RFC 7591
    def _register(self, body: dict):
        redirect_uris = body.get("redirect_uris") or []
        if not redirect_uris:
            return self._error(400, "invalid_redirect_uri", "redirect_uris required")
        method = body.get("token_endpoint_auth_method") or "client_secret_basic"
        client = {**body, "client_id": "dyn-" + secrets.token_hex(8), "client_id_issued_at": int(time.time()),
                  "token_endpoint_auth_method": method}
        if method != "none":
            client["client_secret"] = secrets.token_urlsafe(24)
            client["client_secret_expires_at"] = 0
        self.app.registered[client["client_id"]] = client
        self._json(201, client)

    # Authorization code with PKCE, approved at once.
    def _authorize(self, params: dict):
        app = self.app
        app.authorize_requests.append(params)
        client = app.registered.get(params.get("client_id", ""))
        if client is None:
            return self._error(400, "invalid_client", "unknown client")
        if params.get("redirect_uri") not in client["redirect_uris"]:
            return self._error(400, "invalid_request", "redirect_uri not registered")
        if params.get("response_type") != "code" or params.get("code_challenge_method") != "S256" \
                or not params.get("code_challenge"):
            return self._error(400, "invalid_request", "response_type code with PKCE S256 required")
        code = secrets.token_urlsafe(24)
        app.codes[code] = {"client_id": client["client_id"], "redirect_uri": params["redirect_uri"],
                           "challenge": params["code_challenge"], "resource": params.get("resource"),
                           "scope": params.get("scope")}
        query = urlencode({"code": code, "state": params.get("state", ""), "iss": app.issuer})
        self.send_response(302)
        self.send_header("Location", f"{params['redirect_uri']}?{query}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _client_from_basic(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        return unquote(client_id), unquote(secret)

    def _token(self, form: dict):
        app = self.app
        app.token_requests.append({**form, "_basic": self._client_from_basic()})
        resource = form.get("resource")
        if not resource:
            return self._error(400, "invalid_target", "a resource (RFC 8707) is required")
        grant = form.get("grant_type")
        if grant == "client_credentials":
            credentials = self._client_from_basic() or (form.get("client_id"), form.get("client_secret"))
            if app.confidential_clients.get(credentials[0]) != credentials[1]:
                return self._error(401, "invalid_client", "bad client credentials")
            scope = form.get("scope")
        elif grant == "authorization_code":
            grant_info = app.codes.pop(form.get("code", ""), None)
            if grant_info is None:
                return self._error(400, "invalid_grant", "unknown code")
            verifier = form.get("code_verifier", "")
            if _b64(hashlib.sha256(verifier.encode()).digest()) != grant_info["challenge"]:
                return self._error(400, "invalid_grant", "PKCE verification failed")
            if form.get("redirect_uri") != grant_info["redirect_uri"] or form.get("client_id") != grant_info["client_id"]:
                return self._error(400, "invalid_grant", "redirect_uri or client_id differ")
            if grant_info["resource"] is not None and grant_info["resource"] != resource:
                return self._error(400, "invalid_target", "resource differs from the authorization request's")
            scope = grant_info["scope"]
        else:
            return self._error(400, "unsupported_grant_type", str(grant))
        token = app.mint(aud=resource, scope=scope)
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": 600}
        if scope:
            answer["scope"] = scope
        self._json(200, answer, headers=[("Cache-Control", "no-store")])
