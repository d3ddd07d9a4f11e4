"""TLS contexts that must not vouch for one another: a session from the MCP listener does not resume on the admin
listener (which requires an operator certificate), and tenants whose CAs issue one another are refused at load."""
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from conftest import ROOT, mcpgw_binary
from test_mcp_sdk_conformance import free_port
from test_operations import dev_config, only_problem, write_config
from test_serve_cli import start
from test_tls_resumption import EchoUpstream

CERTS = ROOT / "certs-dev"


def s_client(port: int, mode: list[str], session: str, resume: bool, path: str) -> str:
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-CAfile", str(CERTS / "gateway-ca.pem"), "-ign_eof", *mode,
               "-sess_in" if resume else "-sess_out", session]
    result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def wait_for_port(port: int) -> None:
    import socket
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize("mode", [["-tls1_3"], ["-tls1_2"]], ids=["TLS 1.3 ticket", "TLS 1.2 ticket"])
def test_a_session_from_the_mcp_listener_does_not_resume_on_the_admin_listener(tmp_path, mode):
    config = dev_config(tmp_path)
    admin_port = free_port()
    # Operators' certificates come from a CA of their own; here, the dev gateway CA (no tenant trusts it).
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                       "tls": {"certificate_chain": str(CERTS / "server.pem"), "private_key": str(CERTS / "server.key"),
                               "client_ca": str(CERTS / "gateway-ca.pem")}}
    path = write_config(tmp_path, config)
    process, port, _ = start("--config", path, "--listen", "127.0.0.1:0")
    session = str(tmp_path / "session.pem")
    try:
        wait_for_port(admin_port)
        # No certificate: the MCP listener's client authentication is optional.
        first = s_client(port, mode, session, resume=False, path="/healthz")
        assert "HTTP/1.1 200" in first, first[-2000:]
        # The same session offered to the admin listener, still without a certificate.
        second = s_client(admin_port, mode, session, resume=True, path="/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert "Reused," not in second, "the admin listener resumed the MCP listener's session: " + second[-2000:]
    assert "HTTP/1.1 200" not in second, "metrics served without an operator certificate: " + second[-2000:]
    assert "mcpgw_" not in second


def make_ca(folder, name: str, issuer: tuple[str, str] | None = None) -> tuple[str, str]:
    """A CA certificate and key (self-signed, or issued by `issuer`'s (cert, key)); returns their paths."""
    key, cert = str(folder / f"{name}.key"), str(folder / f"{name}.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, capture_output=True)
    extensions = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    if issuer is None:
        subprocess.run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", f"/CN={name}", "-days", "30",
                        "-out", cert, *extensions], check=True, capture_output=True)
    else:
        request = str(folder / f"{name}.csr")
        subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", request, *extensions],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", issuer[0], "-CAkey", issuer[1],
                        "-CAcreateserial", "-days", "30", "-copy_extensions", "copy", "-out", cert],
                       check=True, capture_output=True)
    return cert, key


def test_a_tenant_ca_issued_by_another_tenants_ca_is_refused(tmp_path):
    # One company root for acme, and globex's issuing CA under it: a chain through globex's CA would end at acme's
    # root, and name both tenants.
    root = make_ca(tmp_path, "company-root")
    issuing = make_ca(tmp_path, "globex-issuing", issuer=root)
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["client_ca"] = [root[0]]
    config["tenants"]["globex"]["client_ca"] = [issuing[0]]
    for tenant in config["tenants"].values():
        tenant["crl"] = []
    problem = only_problem(write_config(tmp_path, config))
    assert "is issued by a CA in" in problem and "company-root.pem" in problem, problem
    # Each tenant with a CA of its own is fine.
    config["tenants"]["acme"]["client_ca"] = [make_ca(tmp_path, "acme-own")[0]]
    result = subprocess.run([mcpgw_binary(), "config", "check", write_config(tmp_path, config, "own.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def make_server_certificate(folder, name: str, issuer: tuple[str, str], san: str | None) -> tuple[str, str]:
    """A serverAuth leaf with CN=localhost, and `san` as its subjectAltName (or none at all)."""
    key, cert, request = str(folder / f"{name}.key"), str(folder / f"{name}.pem"), str(folder / f"{name}.csr")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, capture_output=True)
    extensions = ["-addext", "extendedKeyUsage=serverAuth"] + (["-addext", f"subjectAltName={san}"] if san else [])
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost", "-out", request, *extensions],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", issuer[0], "-CAkey", issuer[1], "-CAcreateserial",
                    "-days", "30", "-copy_extensions", "copy", "-out", cert], check=True, capture_output=True)
    return cert, key


def curl_post(port: int, certificate: str, key: str, body: str) -> subprocess.CompletedProcess:
    """POST `body` to the gateway's /mcp with curl and a client certificate; stdout is the HTTP status."""
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert",
         str(CERTS / "gateway-ca.pem"), "--cert", certificate, "--key", key,
         "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "--data", body, f"https://localhost:{port}/mcp"], capture_output=True, text=True, timeout=30)


def call_through(tmp_path, upstream_ca: str, certificate: tuple[str, str], name: str) -> str:
    """Starts an HTTPS upstream on 127.0.0.1 serving `certificate`, a gateway sending acme to https://localhost:PORT
    (trusting `upstream_ca`), and makes one allowed call; returns the HTTP status the client got."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    upstream.socket = context.wrap_socket(upstream.socket, server_side=True)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = dev_config(tmp_path)
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": f"https://localhost:{upstream.server_address[1]}/mcp", "ca_file": upstream_ca}
    process, port, _ = start("--config", write_config(tmp_path, config, f"{name}.json"), "--listen", "127.0.0.1:0")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    agent = CERTS / "acme" / "agents" / "bot1"
    try:
        result = curl_post(port, f"{agent}.pem", f"{agent}.key", body)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    return result.stdout.strip()


def test_an_https_upstream_is_named_by_its_subject_alt_name_not_its_common_name(tmp_path):
    root = make_ca(tmp_path, "upstream-root")
    named = make_server_certificate(tmp_path, "named", root, "DNS:localhost")
    assert call_through(tmp_path, root[0], named, "named") == "200"
    # CN=localhost and no subjectAltName: not a certificate for localhost.
    cn_only = make_server_certificate(tmp_path, "cn-only", root, None)
    assert call_through(tmp_path, root[0], cn_only, "cn-only") == "502"


def make_agent_certificate(folder, name: str, issuer: tuple[str, str], agent: str) -> tuple[str, str]:
    """A clientAuth leaf naming acme's `agent` by its SPIFFE id, issued by `issuer`."""
    key, cert, request = str(folder / f"{name}.key"), str(folder / f"{name}.pem"), str(folder / f"{name}.csr")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={agent}", "-out", request,
                    "-addext", "extendedKeyUsage=clientAuth",
                    "-addext", f"subjectAltName=URI:spiffe://mcpgw.dev/tenant/acme/agent/{agent}"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", issuer[0], "-CAkey", issuer[1], "-CAcreateserial",
                    "-days", "30", "-copy_extensions", "copy", "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("mode", [["-tls1_3"], ["-tls1_2"], ["-tls1_2", "-no_ticket"]],
                         ids=["TLS 1.3 tickets", "TLS 1.2 tickets", "TLS 1.2 session cache"])
def test_an_agent_under_an_intermediate_ca_resumes_as_itself(tmp_path, mode):
    # root (acme's client_ca) → issuing CA (sent by the agent, not trusted on its own) → agent.
    root = make_ca(tmp_path, "acme-root")
    issuing = make_ca(tmp_path, "acme-issuing", issuer=root)
    leaf = make_agent_certificate(tmp_path, "bot1", issuing, "bot1")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    audit = tmp_path / "audit.log"
    config = dev_config(tmp_path)
    config["audit_log"] = str(audit)
    config["tenants"]["acme"]["client_ca"] = [root[0]]
    for tenant in config["tenants"].values():
        tenant["crl"] = []
        tenant["upstream"] = {"url": f"http://127.0.0.1:{upstream.server_address[1]}/mcp"}
    process, port, _ = start("--config", write_config(tmp_path, config), "--listen", "127.0.0.1:0")
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    request = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Accept: application/json, text/event-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")

    def connect(resume_from: str | None, save_to: str) -> str:
        command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                   "-CAfile", str(CERTS / "gateway-ca.pem"), "-cert", leaf[0], "-key", leaf[1], "-cert_chain", issuing[0],
                   "-ign_eof", *mode, "-sess_out", save_to, *(["-sess_in", resume_from] if resume_from else [])]
        result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=30)
        return result.stdout + result.stderr

    first_session, second_session = str(tmp_path / "first.pem"), str(tmp_path / "second.pem")
    try:
        first = connect(None, first_session)
        second = connect(first_session, second_session)
        # Resumed again from a ticket the resumed connection was given, when it was given one (a new ticket is made
        # from the resumed session, which no longer holds the certificates the client sent).
        renewed = os.path.exists(second_session)
        third = connect(second_session, str(tmp_path / "third.pem")) if renewed else second
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    assert "HTTP/1.1 200" in first, first[-2000:]
    for resumed in (second, third):
        assert "Reused," in resumed, "the connection did not resume: " + resumed[-2000:]
        assert "HTTP/1.1 200" in resumed, "the resumed connection was not authenticated: " + resumed[-2000:]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["tenant"], r["agent"], r["auth_method"]) for r in records] == [("acme", "bot1", "mtls")] * (3 if renewed else 2), records


def client_ca_names(port: int, agent: str | None) -> str:
    """openssl s_client's report of the CA names in the certificate request, and the answer to a tools/call sent with
    `agent`'s certificate (or none)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
    request = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
               "Accept: application/json, text/event-stream\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}")
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-tls1_3",
               "-CAfile", str(CERTS / "gateway-ca.pem"), "-ign_eof"]
    if agent:
        base = CERTS / "acme" / "agents" / agent
        command += ["-cert", f"{base}.pem", "-key", f"{base}.key"]
    result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


@pytest.mark.parametrize("announce", [True, False], ids=["announced (default)", "announce_client_cas: false"])
def test_the_certificate_request_names_the_tenant_cas_only_when_told_to(tmp_path, announce):
    config = dev_config(tmp_path)
    if not announce:
        config["tls"]["announce_client_cas"] = False
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": f"http://127.0.0.1:{upstream.server_address[1]}/mcp"}
    path = write_config(tmp_path, config)
    process, port, _ = start("--config", path, "--listen", "127.0.0.1:0")
    try:
        wait_for_port(port)
        anonymous = client_ca_names(port, None)
        with_certificate = client_ca_names(port, "bot1")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        upstream.shutdown()
    if announce:
        assert "Acceptable client certificate CA names" in anonymous, anonymous[-3000:]
        assert "acme" in anonymous.split("Acceptable client certificate CA names", 1)[1].split("---", 1)[0]
    else:
        assert "No client certificate CA names sent" in anonymous, anonymous[-3000:]
        assert "acme" not in anonymous.split("Server certificate", 1)[1].split("SSL handshake", 1)[0]
    # A client that sends its certificate anyway is authenticated either way (the upstream saw the call).
    assert "HTTP/1.1 200" in with_certificate and "\"ok\": true" in with_certificate, with_certificate[-3000:]


def make_client_certificate(folder, name: str, issuer: tuple[str, str]) -> tuple[str, str]:
    """A clientAuth leaf with CN=`name`, issued by `issuer` (cert, key)."""
    key, cert, request = str(folder / f"{name}.key"), str(folder / f"{name}.pem"), str(folder / f"{name}.csr")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", request,
                    "-addext", "extendedKeyUsage=clientAuth"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", issuer[0], "-CAkey", issuer[1], "-CAcreateserial",
                    "-days", "30", "-copy_extensions", "copy", "-out", cert], check=True, capture_output=True)
    return cert, key


def write_crl(path, issuer: tuple[str, str], revoked: list[str], age_seconds: int = 60) -> None:
    """A CRL signed by `issuer` (cert, key) revoking the certificates in the files `revoked`, issued `age_seconds`
    ago."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    with open(issuer[0], "rb") as cert_file, open(issuer[1], "rb") as key_file:
        ca = x509.load_pem_x509_certificate(cert_file.read())
        key = serialization.load_pem_private_key(key_file.read(), password=None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.subject) \
        .last_update(now - datetime.timedelta(seconds=age_seconds)).next_update(now + datetime.timedelta(days=1))
    for file in revoked:
        with open(file, "rb") as leaf:
            serial = x509.load_pem_x509_certificate(leaf.read()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - datetime.timedelta(minutes=1)).build())
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def admin_get(port: int, operator: tuple[str, str], path: str = "/metrics") -> str:
    """The HTTP status curl got for GET `path` on the admin listener with `operator`'s certificate ("000": none)."""
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", str(CERTS / "gateway-ca.pem"),
         "--cert", operator[0], "--key", operator[1], f"https://localhost:{port}{path}"],
        capture_output=True, text=True, timeout=30)
    return result.stdout


def operator_s_client(port: int, operator: tuple[str, str], mode: str, session: str, resume: bool) -> str:
    """GET /metrics through openssl s_client with `operator`'s certificate, saving or offering the TLS session."""
    request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", mode,
               "-CAfile", str(CERTS / "gateway-ca.pem"), "-cert", operator[0], "-key", operator[1], "-ign_eof",
               "-sess_in" if resume else "-sess_out", session]
    result = subprocess.run(command, input=request, capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def test_the_admin_listener_rereads_its_tls_on_reload_and_refuses_revoked_operators(tmp_path):
    operators = make_ca(tmp_path, "operators")
    alice = make_client_certificate(tmp_path, "alice", operators)
    bob = make_client_certificate(tmp_path, "bob", operators)
    config = dev_config(tmp_path)
    admin_port = free_port()
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}",
                       "tls": {"certificate_chain": str(CERTS / "server.pem"), "private_key": str(CERTS / "server.key"),
                               "client_ca": operators[0]}}
    path = write_config(tmp_path, config)
    process, _, _ = start("--config", path, "--listen", "127.0.0.1:0")
    try:
        wait_for_port(admin_port)
        assert admin_get(admin_port, alice) == "200"
        assert admin_get(admin_port, bob) == "200"
        # Alice keeps a TLS session (TLS 1.3 and 1.2), to offer it again once she is revoked.
        sessions = {}
        for mode in ("-tls1_3", "-tls1_2"):
            sessions[mode] = str(tmp_path / f"alice{mode}.pem")
            first = operator_s_client(admin_port, alice, mode, sessions[mode], resume=False)
            assert "HTTP/1.1 200" in first, first[-2000:]
        # Alice leaves: her certificate is revoked in a CRL the admin listener is now given, and the file reloaded.
        crl = tmp_path / "operators.crl.pem"
        write_crl(crl, operators, [alice[0]])
        config["admin"]["tls"]["crl"] = [str(crl)]
        write_config(tmp_path, config)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while admin_get(admin_port, alice) == "200" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin_get(admin_port, alice) == "000", "a revoked operator certificate is still served after the reload"
        assert admin_get(admin_port, bob) == "200"
        # Nor does her old session get her in: the admin listener resumes no sessions at all.
        for mode, session in sessions.items():
            resumed = operator_s_client(admin_port, alice, mode, session, resume=True)
            assert "Reused," not in resumed, mode + ": " + resumed[-2000:]
            assert "HTTP/1.1 200" not in resumed and "mcpgw_" not in resumed, mode + ": " + resumed[-2000:]
        # The reload reports nothing that needs a restart (the admin TLS files are re-read).
        result = subprocess.run(
            ["curl", "-sS", "-X", "POST", "--max-time", "20", "--cacert", str(CERTS / "gateway-ca.pem"), "--cert", bob[0],
             "--key", bob[1], f"https://localhost:{admin_port}/reload"], capture_output=True, text=True, timeout=30)
        answer = json.loads(result.stdout)
        assert answer["parts"]["tls"]["ok"] is True, answer
        assert answer["parts"]["restart_only_settings"]["ok"] is True, answer
        # Taking TLS away from the admin listener needs a restart: refused, and the listener keeps its TLS.
        del config["admin"]["tls"]
        write_config(tmp_path, config)
        result = subprocess.run(
            ["curl", "-sS", "-X", "POST", "--max-time", "20", "--cacert", str(CERTS / "gateway-ca.pem"), "--cert", bob[0],
             "--key", bob[1], f"https://localhost:{admin_port}/reload"], capture_output=True, text=True, timeout=30)
        answer = json.loads(result.stdout)
        assert answer["parts"]["tls"]["ok"] is False and "admin.tls" in answer["parts"]["tls"]["detail"], answer
        assert answer["parts"]["restart_only_settings"]["ok"] is False, answer
        assert admin_get(admin_port, bob) == "200"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


class IssuingCAGateway:
    """acme: root (its client_ca) → issuing CA (sent by the agent, with its own CRL) → agent bot1; a gateway and an
    echo upstream for it. `globex_crls` are added to globex's CRL list."""

    def __init__(self, tmp_path, revoked_by_root: bool = False, globex_crls: list[str] = ()):
        self.root = make_ca(tmp_path, "acme-root")
        self.issuing = make_ca(tmp_path, "acme-issuing", issuer=self.root)
        self.leaf = make_agent_certificate(tmp_path, "bot1", self.issuing, "bot1")
        self.root_crl, self.issuing_crl = tmp_path / "root.crl.pem", tmp_path / "issuing.crl.pem"
        write_crl(self.root_crl, self.root, [self.issuing[0]] if revoked_by_root else [])
        write_crl(self.issuing_crl, self.issuing, [])
        self.chain = tmp_path / "chain.pem"
        self.chain.write_text(open(self.leaf[0]).read() + open(self.issuing[0]).read())
        self.tmp_path, self.globex_crls = tmp_path, list(globex_crls)

    def start(self):
        self.upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
        threading.Thread(target=self.upstream.serve_forever, daemon=True).start()
        config = dev_config(self.tmp_path)
        config["tenants"]["acme"]["client_ca"] = [self.root[0]]
        config["tenants"]["acme"]["crl"] = [str(self.root_crl), str(self.issuing_crl)]
        config["tenants"]["globex"]["crl"] = config["tenants"]["globex"].get("crl", []) + self.globex_crls
        for tenant in config["tenants"].values():
            tenant["upstream"] = {"url": f"http://127.0.0.1:{self.upstream.server_address[1]}/mcp"}
        self.process, self.port, _ = start("--config", write_config(self.tmp_path, config), "--listen", "127.0.0.1:0")
        return self

    def call(self) -> subprocess.CompletedProcess:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}})
        return curl_post(self.port, str(self.chain), self.leaf[1], body)

    def stop(self) -> str:
        """Stops the gateway and the upstream; returns the gateway's standard error."""
        self.process.send_signal(signal.SIGTERM)
        _, log = self.process.communicate(timeout=30)
        self.upstream.shutdown()
        return log


@pytest.mark.parametrize("revoked", [True, False], ids=["issuing CA revoked by the root", "nothing revoked"])
def test_an_issuing_ca_revoked_in_its_roots_crl_takes_its_agents_with_it(tmp_path, revoked):
    gateway = IssuingCAGateway(tmp_path, revoked_by_root=revoked).start()
    try:
        result = gateway.call()
    finally:
        gateway.stop()
    if revoked:
        assert result.stdout != "200", "an agent under a revoked issuing CA was served: " + result.stderr
    else:
        assert result.stdout == "200", result.stdout + result.stderr


def test_a_forged_crl_for_another_tenants_intermediate_ca_does_not_lock_out_its_agents(tmp_path):
    # acme: root (client_ca) → issuing CA (sent by the agent) → agent, with both CAs' genuine, empty CRLs. globex lists
    # a newer CRL naming acme's issuing CA, signed with a key of its own. OpenSSL takes the newest CRL naming an
    # issuer and checks its signature only then: without the look-up that keeps only CRLs signed by the chain's CA,
    # every acme agent under that CA fails its handshake ("CRL signature failure").
    forged_crl = tmp_path / "forged.crl.pem"
    gateway = IssuingCAGateway(tmp_path, globex_crls=[str(forged_crl)])
    impostor_folder = tmp_path / "impostor"
    impostor_folder.mkdir()
    impostor = make_ca(impostor_folder, "acme-issuing")  # the same name, another key
    write_crl(forged_crl, impostor, [gateway.leaf[0]], age_seconds=5)
    gateway.start()
    try:
        served = gateway.call()
        # The genuine CRL still counts: the agent revoked in it is refused.
        write_crl(gateway.issuing_crl, gateway.issuing, [gateway.leaf[0]], age_seconds=1)
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        revoked = gateway.call()
        while revoked.stdout == "200" and time.monotonic() < deadline:
            time.sleep(0.2)
            revoked = gateway.call()
    finally:
        log = gateway.stop()
    assert served.stdout == "200", "a forged CRL in globex's list locked out acme's agent: " + served.stderr
    assert revoked.stdout != "200", "the genuine CRL of acme's issuing CA no longer revokes"
    # Refused in the handshake (the log says why), or, when the handshake raced the reload, on its request: the
    # trust changed under the connection, and the request is checked against the new CRL (401).
    assert "certificate revoked" in log or revoked.stdout == "401", "refused, but not for the revocation: " + log[-2000:]
