"""Shared fixtures: the repository root and a runner for the built mcpgw binary."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def mcpgw_binary() -> str:
    explicit = os.environ.get("MCPGW_BIN")
    if explicit:
        return explicit
    return str(ROOT / ".build" / "debug" / "mcpgw")


@pytest.fixture
def mcpgw():
    """Runs `mcpgw ARGS` from the repository root; returns (exit status, stdout)."""

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = subprocess.run(
            [mcpgw_binary(), *args], cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60
        )
        return result.returncode, result.stdout

    return run


@pytest.fixture
def verify(mcpgw):
    """`mcpgw verify-token` → (accepted, parsed JSON answer)."""

    def check(token: str, config: str = "mcpgw.dev.json") -> tuple[bool, dict]:
        status, out = mcpgw("verify-token", "--config", config, "-", stdin=token + "\n")
        answer = json.loads(out)
        assert answer["accepted"] == (status == 0)
        return answer["accepted"], answer

    return check


def dev_file(relative: str) -> bytes:
    return (ROOT / "certs-dev" / relative).read_bytes()
