"""The listener behind real load balancers that write PROXY protocol headers: curl's version 1 header
(`--haproxy-protocol`), and haproxy in TCP mode with `send-proxy-v2`. The audit records name the client the load
balancer connected for, and a trusted balancer's connection without a header is not served."""
import json
import signal
import socket
import subprocess
import time

from conftest import ROOT
from test_operations import config_check, dev_config, only_problem, write_config
from test_serve_cli import start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(port: int, *args: str) -> str:
    """An unauthenticated `tools/call` POST with curl: the HTTP status ("000" when the connection failed)."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", "certs-dev/gateway-ca.pem", "-o", "/dev/null", "-w", "%{http_code}",
         "-H", "Content-Type: application/json", "-H", "Accept: application/json, text/event-stream",
         "--data", '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}',
         *args],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    return result.stdout.strip() or "000"


def records(path, count: int) -> list[dict]:
    """The audit records in `path` once there are `count` of them (written a moment after each answer), bounded."""
    deadline = time.time() + 10
    while True:
        found = [json.loads(line) for line in open(path) if line.strip()] if path.exists() else []
        if len(found) >= count or time.time() > deadline:
            return found
        time.sleep(0.05)


def serve_behind(tmp_path, trusted: list[str]):
    config = dev_config(tmp_path)
    config["proxy_protocol"] = {"trusted_proxies": trusted}
    config["audit_log"] = str(tmp_path / "audit.jsonl")
    process, port, _ = start("--config", write_config(tmp_path, config), "--listen", "127.0.0.1:0")
    return process, port, tmp_path / "audit.jsonl"


def stop(process) -> str:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def test_curl_version_1_header_from_a_trusted_proxy(tmp_path):
    process, port, audit = serve_behind(tmp_path, ["127.0.0.1"])
    url = f"https://localhost:{port}/mcp"
    try:
        resolve = f"localhost:{port}:127.0.0.1"
        # curl writes `PROXY TCP4 127.0.0.1 127.0.0.1 <port> <port>` before its TLS handshake.
        assert post(port, "--haproxy-protocol", "--interface", "127.0.0.1", "--resolve", resolve, url) == "401"
        # From the trusted address, a connection without the header is not served (its TLS bytes are not a header).
        assert post(port, "--interface", "127.0.0.1", "--resolve", resolve, url) == "000"
        # Another address is no proxy: its connections are its own, served without a header.
        assert post(port, "--interface", "127.0.0.2", "--resolve", resolve, url) == "401"
        addresses = [record.get("client_address", "") for record in records(audit, 2)]
        assert len(addresses) == 2 and addresses[0].startswith("127.0.0.1:") and addresses[1].startswith("127.0.0.2:"), addresses
    finally:
        stderr = stop(process)
    assert "connection refused: the connection does not start with a PROXY protocol header" in stderr


def test_haproxy_send_proxy_v2_names_the_client(tmp_path):
    process, port, audit = serve_behind(tmp_path, ["127.0.0.1/32"])
    balancer_port = free_port()
    (tmp_path / "haproxy.cfg").write_text(f"""
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend clients
  bind 127.0.0.1:{balancer_port}
  default_backend gateway
backend gateway
  server gw 127.0.0.1:{port} send-proxy-v2
""")
    balancer = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", balancer_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"https://localhost:{balancer_port}/mcp"
        resolve = f"localhost:{balancer_port}:127.0.0.1"
        # The client connects to haproxy from 127.0.0.5; haproxy connects to the gateway from 127.0.0.1.
        assert post(balancer_port, "--interface", "127.0.0.5", "--resolve", resolve, url) == "401"
        assert post(balancer_port, "--interface", "127.0.0.6", "--resolve", resolve,
                    "--cert", "certs-dev/acme/agents/bot1.pem", "--key", "certs-dev/acme/agents/bot1.key", url) != "000"
        found = [(record.get("client_address", ""), record.get("agent")) for record in records(audit, 2)]
        assert len(found) == 2, found
        assert found[0][0].startswith("127.0.0.5:"), found
        # mTLS through the balancer: the client certificate is the client's (TLS ends at the gateway).
        assert found[1][0].startswith("127.0.0.6:") and found[1][1] == "bot1", found
    finally:
        balancer.send_signal(signal.SIGTERM)
        balancer.communicate(timeout=10)
        stop(process)


def test_trusted_proxies_are_checked(tmp_path):
    config = dev_config(tmp_path)
    config["proxy_protocol"] = {"trusted_proxies": ["10.0.0.0/8", "192.0.2.10"]}
    status, lines, stderr = config_check(write_config(tmp_path, config))
    assert status == 0, (lines, stderr)
    assert any("proxy_protocol.trusted_proxies: 10.0.0.0/8 is a wide range" in line for line in lines), lines
    for wrong, reason in [(["10.1.0.0/8"], "bits set past its /8 prefix"), (["lb.internal"], "not an IP address"),
                          ([], "is required")]:
        config["proxy_protocol"] = {"trusted_proxies": wrong}
        path = write_config(tmp_path, config)
        assert reason in only_problem(path) and "proxy_protocol.trusted_proxies" in only_problem(path)
