"""SIGHUP reloads TLS for new handshakes — a replaced server certificate, a client CA added to a tenant — while an
established connection keeps working."""
import hashlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from http.server import ThreadingHTTPServer

from conftest import ROOT
from test_serve_cli import start
from test_tls_resumption import EchoUpstream

DEV = ROOT / "certs-dev"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def leaf(cwd, name, ca, ca_key, subject, san, usage):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=cwd)


def connect(port, cert, key):
    context = ssl.create_default_context(cafile=str(DEV / "gateway-ca.pem"))
    context.load_cert_chain(str(cert), str(key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def call(conn) -> str:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}}).encode()
    conn.sendall(b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Accept: application/json, text/event-stream\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(4096)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += conn.recv(4096)
    return head.split(b"\r\n")[0].decode()


def served(port, cert, key) -> bool:
    """Whether a new connection with this client certificate gets a call answered (TLS 1.3 reports a refused
    client certificate only after the client's side of the handshake, so a call is what tells)."""
    try:
        with connect(port, cert, key) as conn:
            return call(conn).startswith("HTTP/1.1 200")
    except (ssl.SSLError, OSError, IndexError, ValueError):
        return False


def fingerprint(conn) -> str:
    return hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest()


def test_sighup_swaps_certificate_and_client_cas_for_new_handshakes_only(tmp_path):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    shutil.copy(DEV / "server.pem", tmp_path / "server.pem")
    shutil.copy(DEV / "server.key", tmp_path / "server.key")
    shutil.copy(DEV / "acme" / "ca.pem", tmp_path / "acme-ca.pem")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text().replace('"certs-dev/', f'"{DEV}/'))
    config["tls"]["certificate_chain"] = str(tmp_path / "server.pem")
    config["tls"]["private_key"] = str(tmp_path / "server.key")
    config["tenants"]["acme"]["client_ca"] = [str(tmp_path / "acme-ca.pem")]
    for tenant in config["tenants"].values():
        tenant.pop("crl", None)
    config["policies"] = str(ROOT / "policies")
    (tmp_path / "config.json").write_text(json.dumps(config))
    process, port, _ = start("--config", str(tmp_path / "config.json"), "--listen", "127.0.0.1:0", "--audit-log", "/dev/null",
                             "--upstream", f"http://127.0.0.1:{upstream.server_address[1]}/mcp")
    try:
        bot1 = (DEV / "acme" / "agents" / "bot1.pem", DEV / "acme" / "agents" / "bot1.key")
        long_lived = connect(port, *bot1)
        assert call(long_lived).startswith("HTTP/1.1 200")
        old_certificate = fingerprint(long_lived)

        # A second CA for tenant acme with an agent of its own, and a renewed server certificate.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-subj", "/O=mcpgw test/CN=acme second CA", "-keyout", "ca2.key", "-out", "ca2.pem", cwd=tmp_path)
        leaf(tmp_path, "bot9", tmp_path / "ca2.pem", tmp_path / "ca2.key", "/O=mcpgw test/CN=bot9",
             "URI:spiffe://mcpgw.dev/tenant/acme/agent/bot9", "clientAuth")
        leaf(tmp_path, "server-new", DEV / "gateway-ca.pem", DEV / "gateway-ca.key", "/O=mcpgw test/CN=localhost",
             "DNS:localhost,IP:127.0.0.1", "serverAuth")
        bot9 = (tmp_path / "bot9.pem", tmp_path / "bot9.key")
        assert not served(port, *bot9), "a certificate from the new CA was accepted before the reload"

        (tmp_path / "acme-ca.pem").write_text((tmp_path / "acme-ca.pem").read_text() + (tmp_path / "ca2.pem").read_text())
        (tmp_path / "server.pem").write_text((tmp_path / "server-new.pem").read_text() + (DEV / "gateway-ca.pem").read_text())
        shutil.copy(tmp_path / "server-new.key", tmp_path / "server.key")
        process.send_signal(signal.SIGHUP)

        deadline = time.time() + 10
        while not served(port, *bot9) and time.time() < deadline:
            time.sleep(0.05)
        assert served(port, *bot9), "the new CA was not trusted after SIGHUP"
        with connect(port, *bot1) as fresh:
            assert fingerprint(fresh) != old_certificate, "new handshakes still get the old server certificate"
            assert call(fresh).startswith("HTTP/1.1 200")

        # The connection opened before the reload is unharmed.
        assert call(long_lived).startswith("HTTP/1.1 200")
        assert fingerprint(long_lived) == old_certificate
        long_lived.close()

        # A broken certificate file is refused: the material in force stays.
        with connect(port, *bot1) as conn:
            current = fingerprint(conn)
        (tmp_path / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert served(port, *bot9)
        with connect(port, *bot1) as conn:
            assert fingerprint(conn) == current
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        upstream.shutdown()
    assert "TLS reloaded" in stderr
    assert "TLS reload refused; the previous certificate and trust stay in force" in stderr
