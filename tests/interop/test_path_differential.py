"""Differential test of the path rules against real resolvers: for generated and adversarial paths, nothing that
Python's posixpath or ntpath (after the decodings a server may apply: percent-decoding, NFKC, backslashes) resolves
outside the root is allowed by a rule with allow_traversal and allow_absolute false. Seeded, bounded."""
import json
import ntpath
import posixpath
import random
import subprocess
import unicodedata
from urllib.parse import unquote

from conftest import ROOT, mcpgw_binary

PIECES = ["..", ".", "a", "b", "etc", "%2e%2e", "%2e", "%252e%252e", "．．", "..\u0301", "\u0301..", ".\u200b.", "....", ".. ",
          "...", "%c0%ae%c0%ae", "..%2f", "..\\", "\u2024\u2024", "~", "C:", "file:", "\u200b", "\u2060", "x\u0301",
          "\u00a0", " ", "%00", "passwd"]
SEPARATORS = ["/", "\\", "\u2215", "\u2044", "%2f", "%5c", "//", "/\u0301", "\u200b/", "／"]


def generate(count: int, seed: int = 20261125) -> list[str]:
    rng = random.Random(seed)
    paths = []
    for _ in range(count):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 7))]
        text = ""
        for part in parts:
            text += part + (rng.choice(SEPARATORS) if rng.random() < 0.8 else "")
        if rng.random() < 0.2:
            text = rng.choice(["/", "\\", " /", "\u00a0/", "file:///", "\\\\host\\share\\", "C:\\", "~/"]) + text
        paths.append(text)
    return paths


def variants(path: str) -> set[str]:
    """What a server might resolve: the text as sent, percent-decoded (to a fixed point), NFKC-normalised, both."""
    found = {path}
    decoded = path
    for _ in range(4):
        decoded = unquote(decoded, errors="replace")
        found.add(decoded)
    for text in list(found):
        found.add(unicodedata.normalize("NFKC", text))
    return found


def escapes(path: str) -> bool:
    for text in variants(path):
        if "\x00" in text:
            return True
        posix = posixpath.normpath(posixpath.join("/srv/root", text.replace("\\", "/")))
        if posix != "/srv/root" and not posix.startswith("/srv/root/"):
            return True
        windows = ntpath.normpath(ntpath.join("C:\\srv\\root", text)).lower()
        if windows != "c:\\srv\\root" and not windows.startswith("c:\\srv\\root\\"):
            return True
        if text.lower().startswith("file:"):
            return True
    return False


def test_no_path_a_resolver_takes_outside_the_root_is_allowed(tmp_path):
    policies = tmp_path / "policies" / "t"
    policies.mkdir(parents=True)
    (policies / "p.json").write_text(json.dumps({
        "name": "p", "default_action": "deny",
        "rules": [{"id": "R", "action": "allow", "tools": ["read_file"],
                   "args": {"path": {"path": {"allow_traversal": False, "allow_absolute": False}}}}]}))
    rng = random.Random(7)
    benign = ["/".join(rng.choice(["a", "b", "docs", "x.txt", "notes..md", "..hidden", "caf\u00e9"]) for _ in range(rng.randint(1, 5)))
              for _ in range(500)]
    paths = generate(20_000) + ["../x", "a/../../x", "/etc/passwd", "..\u2215x", "/\u0301etc", "....//etc", "\u00a0/etc", "file:///etc"]
    paths += benign
    lines = "".join(json.dumps({"tenant": "t", "agent": "a", "tool": "read_file", "arguments": {"path": p}}) + "\n" for p in paths)
    result = subprocess.run([mcpgw_binary(), "policy", "evaluate", "--policies", str(tmp_path / "policies")],
                            input=lines, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line)["decision"] for line in result.stdout.splitlines()]
    assert len(decisions) == len(paths)
    escaping = [p for p in paths if escapes(p)]
    allowed_escapes = [p for p, d in zip(paths, decisions) if d == "allow" and escapes(p)]
    assert len(escaping) > 5_000, "the generator should produce many escaping paths"
    assert not allowed_escapes, f"{len(allowed_escapes)} escaping paths allowed, e.g. {allowed_escapes[:10]!r}"
    # And the rule is not a blanket deny: every plainly harmless path passes, and a share of the generated ones.
    benign_decisions = decisions[-len(benign):]
    assert benign_decisions.count("allow") == len(benign), [p for p, d in zip(benign, benign_decisions) if d != "allow"][:10]
    assert decisions.count("allow") > 500
