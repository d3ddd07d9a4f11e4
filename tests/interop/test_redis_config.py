"""The `redis` section of the configuration and the `scope` of rate limits: `mcpgw config check` names every
mistake by file and field (and never repeats a password), and `serve --redis` needs a configuration."""
import json
import subprocess

from conftest import ROOT, mcpgw_binary
from test_operations import config_check, dev_config, problems, write_config


def with_redis(tmp_path, section: dict, **tenant_settings) -> str:
    config = dev_config(tmp_path)
    config["redis"] = section
    for tenant, settings in tenant_settings.items():
        config["tenants"][tenant].update(settings)
    return write_config(tmp_path, config)


def test_a_valid_section_is_reported(tmp_path):
    password = tmp_path / "redis-password"
    password.write_text("s3cret\n")
    path = with_redis(tmp_path, {"url": "redis://mcpgw@127.0.0.1:6390/2", "password_file": str(password), "replicas": 3,
                                 "failure_mode": "local_fallback", "lease_seconds": 0.1, "max_lease": 16},
                      acme={"redis_failure_mode": "fail_closed"})
    status, lines, stderr = config_check(path)
    assert status == 0, (lines, stderr)
    assert "rate limits shared through Redis at 127.0.0.1:6390" in lines[-1], lines


def test_plain_redis_off_this_machine_is_warned_about(tmp_path):
    """Found by review: plain redis:// to another host passed the check silently, with the password sent in clear and
    replies anyone on the path could forge. Loopback and rediss:// are not warned about."""
    password = tmp_path / "redis-password"
    password.write_text("s3cret\n")
    for url, with_password, warned in [
        ("redis://10.1.2.3:6379", True, "the password (AUTH is sent in clear)"),
        ("redis://redis.internal:6379", False, "forge Redis's replies"),
        ("redis://127.attacker.example:6379", True, "the password (AUTH is sent in clear)"),
        ("redis://127.0.0.1:6379", True, None),
        ("redis://localhost:6379", True, None),
        ("redis://[::1]:6379", False, None),
    ]:
        section = {"url": url, **({"password_file": str(password)} if with_password else {})}
        status, lines, stderr = config_check(with_redis(tmp_path, section))
        assert status == 0, (url, lines, stderr)
        warnings = [line for line in lines if line.startswith("warning: ") and "redis.url" in line]
        if warned:
            assert len(warnings) == 1 and warned in warnings[0] and "use rediss://" in warnings[0], (url, lines)
        else:
            assert not warnings, (url, lines)


def test_mistakes_name_the_field(tmp_path):
    cases = [
        ({"url": "http://127.0.0.1:6379"}, {}, "redis.url: must start with redis:// or rediss://"),
        ({"url": "redis://127.0.0.1:6379", "tls": {"ca_file": "x.pem"}}, {}, "redis.tls: needs a rediss:// URL"),
        ({"url": "redis://127.0.0.1:6379", "pool": 3}, {}, "redis.pool: unknown key"),
        ({"url": "redis://127.0.0.1:6379", "replicas": 0}, {}, "redis.replicas: must be between 1 and 1024"),
        ({"url": "redis://127.0.0.1:6379", "failure_mode": "fail_open"}, {}, "redis.failure_mode: must be fail_closed or local_fallback"),
        ({"url": "redis://127.0.0.1:6379", "password_file": "/nonexistent/redis-password"}, {}, "redis.password_file: cannot read"),
        # Found by review: an empty password file passed, and every shared-limited call got 503 for good.
        ({"url": "redis://127.0.0.1:6379", "password_file": "EMPTY"}, {}, "redis.password_file: "),
        ({"url": "redis://127.0.0.1:6379/x"}, {}, "redis.url: the path must be a database number"),
        ({}, {}, "redis.url: is required"),
        ({"url": "redis://mcpgw@127.0.0.1:6379"}, {}, "redis.username: needs password_file"),
        ({"url": "redis://127.0.0.1:6379"}, {"acme": {"redis_failure_mode": "open"}},
         "tenants.acme.redis_failure_mode: must be fail_closed or local_fallback"),
        # Bounded: a call waits on these, and a silent Redis must not hold calls for hours.
        ({"url": "redis://127.0.0.1:6379", "command_timeout_ms": 9223372036854775807}, {},
         "redis.command_timeout_ms: must be between 1 and 60000"),
        ({"url": "redis://127.0.0.1:6379", "connect_timeout_ms": 3600000}, {}, "redis.connect_timeout_ms: must be between 1 and 60000"),
        ({"url": "redis://127.0.0.1:6379", "replicas": 100000}, {}, "redis.replicas: must be between 1 and 1024"),
        ({"url": "redis://h o st:6379"}, {}, "redis.url: host 'h o st' is not a host name or address"),
        ({"url": "redis://127.0.0.1:+6379"}, {}, "redis.url: port '+6379' is not 1-65535"),
        ({"url": "redis://127.0.0.1/+1"}, {}, "redis.url: the path must be a database number"),
    ]
    empty = tmp_path / "empty-password"
    empty.write_text(" \n")
    for section, tenants, expected in cases:
        if section.get("password_file") == "EMPTY":
            section = {**section, "password_file": str(empty)}
            expected = f"redis.password_file: {empty} is empty"
        path = with_redis(tmp_path, section, **tenants)
        found = problems(path)
        assert any(expected in problem for problem in found), (expected, found)


def test_a_tenant_failure_mode_is_checked_without_a_redis_section(tmp_path):
    # A typo must not wait for the day Redis is configured (then `serve --redis` would refuse the file).
    config = dev_config(tmp_path)
    config["tenants"]["acme"]["redis_failure_mode"] = "fail_open"
    found = problems(write_config(tmp_path, config))
    assert any("tenants.acme.redis_failure_mode: must be fail_closed or local_fallback" in problem for problem in found), found


def test_a_password_in_the_url_is_refused_and_not_repeated(tmp_path):
    path = with_redis(tmp_path, {"url": "redis://mcpgw:hunter2@127.0.0.1:6379"})
    status, lines, stderr = config_check(path)
    assert status == 1
    assert any("password_file" in line for line in lines), lines
    assert "hunter2" not in "\n".join(lines) + stderr


def test_rate_limit_scope_must_be_global_or_local(tmp_path):
    config = dev_config(tmp_path)
    document = tmp_path / "policies" / "acme" / "limits.json"
    document.write_text(json.dumps({"name": "limits", "rules": [],
                                    "rate_limits": [{"id": "G", "rate_per_second": 5, "scope": "cluster"}]}))
    found = problems(write_config(tmp_path, config))
    assert any("scope" in problem and "must be global or local" in problem for problem in found), found


def test_serve_redis_needs_a_configuration():
    result = subprocess.run([mcpgw_binary(), "serve", "--redis", "redis://127.0.0.1:6379", "--insecure-plain-http"],
                            cwd=ROOT / "tests", capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "--redis" in result.stderr and "--config" in result.stderr, result.stderr


def test_serve_redis_supplies_the_url_the_file_leaves_out(tmp_path):
    # `--redis URL` sets redis.url: a file whose section has everything else starts, and reloads, with it.
    from shared_limits_helpers import RedisServer
    from test_mcp_sdk_conformance import free_port
    from test_operations import Gateway

    redis = RedisServer(tmp_path).start()
    path = with_redis(tmp_path, {"replicas": 2, "failure_mode": "fail_closed"})
    try:
        gateway = Gateway("--config", path, "--listen", "127.0.0.1:0", "--redis", redis.url, admin_port=free_port())
        try:
            assert "rate limits shared through Redis" in gateway.stderr, gateway.stderr
            status, body, _ = gateway.admin("POST", "/reload")
            assert status == 200 and json.loads(body)["reloaded"] is True, body
        finally:
            assert gateway.stop() == 0, gateway.stderr
    finally:
        redis.stop()
