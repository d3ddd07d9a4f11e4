"""Differential test of resource-URI matching (`resources/read`) against Python's URL parser: for seeded, adversarial
file URIs, nothing that `urllib.parse.urlsplit` and a server's reading of the path places outside `/workspace/` is
allowed by a `file:///workspace/*` rule. The readings: percent-decoded once, twice… to a fixed point; NFKC or not;
backslashes as separators or as plain characters; dot segments removed per RFC 3986 §5.2.4 (on the encoded path, as
WHATWG parsers do, or after decoding) and/or resolved as a POSIX path (`//..` climbs there). A URI escapes when any
reading is not a `file` URI with an empty or `localhost` authority whose path is `/workspace` or under it (whole
segments), or holds a NUL. And the rule is not a blanket deny: plainly harmless URIs pass. Seeded, bounded; one
`mcpgw policy evaluate` process per batch."""
import collections
import json
import posixpath
import random
import re
import subprocess
import time
import unicodedata
from urllib.parse import unquote, urlsplit

from conftest import ROOT, mcpgw_binary

ROOT_DIR = "/workspace"

SCHEMES = ["file", "FILE", "File", "fIlE", "file", "file", "https", "files", "fil", "f\u0131le", "fi\tle", " file"]
AUTHORITIES = ["", "", "", "", "localhost", "LOCALHOST", "Localhost", "workspace", "evil.example", "localhost:80",
               "user@localhost", "localhost.", "%6cocalhost", "127.0.0.1", "[::1]", "\\", ".."]
PIECES = ["workspace", "WORKSPACE", "Workspace", "workspace2", "workspacex", "..", ".", "...", "a", "b.txt", "etc",
          "passwd", "%2e%2e", "%2E%2e", "%2e", ".%2e", "%252e%252e", "%25252e%25252e", "%2525252e%2525252e",
          "%c0%ae%c0%ae", "%ef%bc%8e%ef%bc%8e", "\uff0e\uff0e", "\u2025", "\u2024\u2024", "\ufe52.", "..;", ";",
          "%00", "\x00", ".\t.", "%09", "..%2f", "..\\", "%3f", "%23", "\u2215", "\uff0f", "\uff3c"]
SEPARATORS = ["/", "/", "/", "/", "\\", "//", "///", "%2f", "%2F", "%5c", "%252f", "%255c", "/./", "/;/", "\u2215",
              "\uff0f", "\uff3c"]
PREFIXES = ["file:///workspace/../", "file:///workspace/%2e%2e/", "file:///workspace/%2E%2E%2f", "file:/workspace/",
            "file://workspace/", "file:///workspace", "file:///workspacex/", "file:///workspace/",
            "file:///workspace//", "file:///workspace/a//", "FILE:///WORKSPACE/", "file://localhost/workspace/",
            "file:\\\\\\workspace\\", "file:///workspace\\..\\", "file:///workspace/.%2e/", "file:%2f%2f%2fworkspace/",
            "file://localhost", "file:///workspace/a/%2e%2e%2f%2e%2e%2f"]
SUFFIXES = ["", "", "", "?x=..", "?x=/../../etc/passwd", "#..", "#/../../etc", "?", "#", "?a=%00", "?..#..",
            "%3f/../..", "%23/../.."]


def generate(count: int, seed: int = 20261126) -> list[str]:
    rng = random.Random(seed)
    uris = []
    for _ in range(count):
        path = ""
        for _ in range(rng.randint(1, 6)):
            path += rng.choice(SEPARATORS) + rng.choice(PIECES)
        if rng.random() < 0.3:
            path += rng.choice(SEPARATORS)
        if rng.random() < 0.45:
            head = rng.choice(PREFIXES)
            path = path.lstrip("/")
        else:
            authority = rng.choice(AUTHORITIES)
            head = rng.choice(SCHEMES) + ":" + ("//" + authority if authority or rng.random() < 0.8 else "")
            if rng.random() < 0.6:
                head += rng.choice(["/workspace/", "/workspace", "/WORKSPACE/", "/workspace2/", "/workspace/a/", "/"])
                path = path.lstrip("/")
        uris.append(head + path + rng.choice(SUFFIXES))
    return uris


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, transcribed step by step (input buffer → output buffer)."""
    source, output = path, ""
    while source:
        if source.startswith("../"):
            source = source[3:]
        elif source.startswith("./"):
            source = source[2:]
        elif source.startswith("/./"):
            source = "/" + source[3:]
        elif source == "/.":
            source = "/"
        elif source.startswith("/../") or source == "/..":
            source = "/" + source[4:] if source.startswith("/../") else "/"
            output = output[: output.rfind("/")] if "/" in output else ""
        elif source in (".", ".."):
            source = ""
        else:
            end = source.find("/", 1)
            end = len(source) if end < 0 else end
            output, source = output + source[:end], source[end:]
    return output


UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|5[fF]|7[eE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA])")


def decode_unreserved(path: str) -> str:
    """RFC 3986 §6.2.2.2: escapes of unreserved characters (so `%2e` is `.`) decoded; `%2f` and the rest stay."""
    return UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)


def decodings(text: str) -> list[str]:
    """`text` percent-decoded 0, 1, 2… times, up to its fixed point (at most 8 rounds)."""
    rounds = [text]
    for _ in range(8):
        following = unquote(rounds[-1], errors="replace")
        if following == rounds[-1]:
            break
        rounds.append(following)
    return rounds


def readings(path: str) -> list[tuple[str, str]]:
    """What a server may hand to open() for a URI path, each with how it got there: dot segments resolved (RFC 3986
    §5.2.4) on the encoded path, as WHATWG URL parsers do, then decoded once or to the fixed point; or decoded k times
    and then resolved, and maybe decoded further; or decoded and opened as is (the kernel resolves `..` then, and
    `//..` is not `..` of an empty segment there). Each with backslashes as separators or as plain characters (POSIX),
    and with or without NFKC. Backslashes folded and no NFKC first, so a reason names the plainest reading."""
    stages = decodings(path)
    found: dict[str, str] = {}
    for fold in (True, False):
        for nfkc in (False, True):
            def shaped(text: str) -> str:
                text = text.replace("\\", "/") if fold else text
                return unicodedata.normalize("NFKC", text) if nfkc else text
            how = ("" if fold else ", backslashes kept") + (", NFKC" if nfkc else "")
            # Decoding rounds past the fixed point change nothing; at least one round is always taken.
            for k in range(max(2, len(stages))):
                stage = stages[min(k, len(stages) - 1)]
                resolved = remove_dot_segments(decode_unreserved(shaped(stage)))
                later = decodings(resolved)
                for j in (0, 1, len(later) - 1) if k else (1, len(later) - 1):
                    found.setdefault(shaped(later[min(j, len(later) - 1)]),
                                     f"{k} decoding(s), RFC 3986 dot segments, {j} more{how}")
                if k:
                    found.setdefault(shaped(stage), f"{k} decoding(s), opened as is{how}")
    return [(text, how) for text, how in found.items()]


def within_root(location: str) -> bool:
    """Whether `location`, resolved lexically as a POSIX path (as `os.path.realpath` does, and the kernel when the
    components exist; `//..` climbs out of the directory before it), is ROOT_DIR or under it (whole segments)."""
    location = posixpath.normpath(location)
    location = re.sub("^/+", "/", location)
    return location == ROOT_DIR or location.startswith(ROOT_DIR + "/")


def escape_reason(uri: str) -> str | None:
    """Why `uri` may reach outside file:///workspace/ for some server, or None if every reading stays inside."""
    try:
        parts = urlsplit(uri)
    except ValueError as error:
        return f"urlsplit refuses it ({error})"
    if parts.scheme.lower() != "file":
        return f"scheme {parts.scheme!r}"
    if parts.netloc.lower() not in ("", "localhost"):
        return f"authority {parts.netloc!r}"
    for text, how in readings(parts.path):
        if "\x00" in text:
            return f"NUL ({how})"
        if not text.startswith("/"):
            return f"relative path {text!r} ({how})"
        if not within_root(text):
            return f"{text!r} is {posixpath.normpath(text)!r} ({how})"
    return None


def harmless(count: int, seed: int = 11) -> list[str]:
    """URIs a careful gateway has no reason to refuse: plain names, `.`, and `..` that never climbs above the
    workspace, with a query or fragment now and then."""
    rng = random.Random(seed)
    uris = []
    for _ in range(count):
        segments, depth = [], 0
        for _ in range(rng.randint(1, 6)):
            step = rng.choice(["name", "name", "name", ".", ".."])
            if step == "name" or (step == ".." and depth == 0):
                segments.append(rng.choice(["a", "b", "docs", "x.txt", "notes..md", "..hidden", "caf%C3%A9", "a%20b",
                                            "README", "%61", "caf\u00e9", "v1.2", "~x", "a;b"]))
                depth += 1
            else:
                segments.append(step)
                depth -= step == ".."
        # No query or fragment: mcpgw refuses them on file: URIs (a server that strips the scheme would resolve
        # dot segments in them).
        uris.append(rng.choice(["file", "FILE", "File"]) + ":///workspace/" + "/".join(segments))
    return uris


BENIGN = ["file:///workspace/a.txt", "file:///workspace/dir/./b.md", "file:///workspace/x/../y", "FILE:///workspace/a",
          "File:///workspace/docs/readme.md", "file:///workspace/", "file:///workspace/a%20b.txt",
          "file:///workspace/caf%C3%A9.txt",
          "file:///workspace/a/b/../../c", "file:///workspace/notes..md", "file:///workspace/..hidden",
          "file:///workspace/a/.", "file:///workspace/a/b/./c/../d.txt", "file:///workspace/%61.txt"]
# Harmless, but a careful gateway may refuse them (mcpgw refuses the first five: the rule names an empty authority and
# the `///` form; encoded separators and backslashes are ambiguous): either answer is accepted, the count is reported.
TOLERATED = ["file://localhost/workspace/a", "file://LOCALHOST/workspace/a", "file:/workspace/a",
             "file:////workspace/a", "file:///workspace", "file:///workspace/dir%2fsub/x", "file:///workspace/a\\b.txt",
             "file:///workspace/%2e%2e%2fworkspace/a", "file:///workspace/%252e%252e%252fworkspace/z",
             # Dots-only and `..;` segments: names on POSIX, but Windows trims trailing dots and Java servers drop
             # `;parameters`, so mcpgw refuses them.
             "file:///workspace/...", "file:///workspace/a/.../b", "file:///workspace/a/..;x/b",
             # A query or fragment on a file: URI: refused by mcpgw (see REFUSED_EVEN_IF_SPLIT_SAFE).
             "file:///workspace/a?x=1", "file:///workspace/a#section"]
# Safe for urlsplit-based servers, but a server that strips `file://` and resolves the rest reads /etc/passwd:
# mcpgw must refuse these whatever the oracle says.
REFUSED_EVEN_IF_SPLIT_SAFE = ["file:///workspace/a?/../../../etc/passwd", "file:///workspace/#/../../etc/passwd",
                              "file:///workspace/a?x=%2e%2e/%2e%2e/etc/passwd"]
# Escapes spelled out: each must be caught by the oracle and refused by mcpgw. The last three groups are short forms of
# what the generated URIs turned up.
HAND_WRITTEN = ["file:///workspace/../etc/passwd", "file:///workspace/%2e%2e/etc/passwd",
                "file:///workspace/%252e%252e/etc/passwd", "file:///workspace/..%2f..%2fetc%2fpasswd",
                "file:///workspace/..\\..\\etc\\passwd", "file:///workspace/%5c..%5c..%5cetc/passwd",
                "file:///workspacex/a", "file:///workspace2/a", "file://evil.example/workspace/a",
                "file://workspace/etc/passwd", "file:///workspace/a%00.txt", "file:///etc/passwd",
                "https:///workspace/a", "file:workspace/a", "file:///workspace/.\t./etc/passwd",
                # `//..`: RFC 3986 §5.2.4 drops the empty segment, the kernel drops `workspace`.
                "file:///workspace//../etc/passwd", "file:///workspace/a//../../etc/passwd",
                "file:///workspace/%2f../etc/passwd",
                # Encoded or backslash separators: a segment for the gateway, part of a name for the server.
                "file:///workspace/a%2fb/../../etc/passwd", "file:///workspace/a%5cb/../../etc/passwd",
                "file:///workspace/a%252fb/../../etc/passwd", "file:///workspace/a\\b/../../etc/passwd",
                # Dots that are `..` after NFKC.
                "file:///workspace/\uff0e\uff0e/etc/passwd", "file:///workspace/%ef%bc%8e%ef%bc%8e/etc/passwd",
                "file:///workspace/\u2025/etc/passwd"]


def decide(uris: list[str], resource_patterns: list[str], tmp_path) -> list[str]:
    policies = tmp_path / "policies" / "t"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "x.json").write_text(json.dumps({
        "name": "uri", "default_action": "deny",
        "rules": [{"id": "R1", "action": "allow", "methods": ["resources/read"], "resources": resource_patterns}]}))
    lines = "".join(json.dumps({"tenant": "t", "agent": "a", "method": "resources/read", "target": uri}) + "\n"
                    for uri in uris)
    result = subprocess.run([mcpgw_binary(), "policy", "evaluate", "--policies", str(tmp_path / "policies")],
                            input=lines, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(uris)
    assert not [a for a in answers if "error" in a], [a for a in answers if "error" in a][:5]
    return [a["decision"] for a in answers]


def counterexamples(uris: list[str], decisions: list[str]) -> list[tuple[str, str]]:
    found = []
    for uri, decision in zip(uris, decisions):
        if decision != "deny":
            reason = escape_reason(uri)
            if reason is not None:
                found.append((uri, reason))
    return found


def describe(found: list[tuple[str, str]]) -> str:
    """Counts by the first reading that escapes, then the plainest examples: folded backslashes and no NFKC first."""
    def kind(reason: str) -> str:
        reading = re.search(r"\((\d+ decoding.*)\)$", reason)
        return re.sub(r"\d+ (?=decoding|more)", "n ", reading.group(1)) if reading else reason

    def plainness(pair: tuple[str, str]) -> tuple:
        uri, reason = pair
        return ("NFKC" in reason, "backslashes kept" in reason, reason.startswith("relative"), len(uri), uri)

    kinds = collections.Counter(kind(reason) for _, reason in found)
    return (f"{len(found)} escaping URIs not denied; by first reading that escapes: {dict(kinds.most_common())}\n"
            + "\n".join(f"  {uri!r}: {reason}" for uri, reason in sorted(found, key=plainness)[:20]))


def test_oracle_self_check():
    for uri in BENIGN + TOLERATED + harmless(500):
        assert escape_reason(uri) is None, (uri, escape_reason(uri))
    for uri in HAND_WRITTEN:
        assert escape_reason(uri) is not None, uri
    assert remove_dot_segments("/a/b/c/./../../g") == "/a/g"  # RFC 3986 §5.2.4's own examples
    assert remove_dot_segments("mid/content=5/../6") == "mid/6"
    assert remove_dot_segments("/workspace//../etc") == "/workspace/etc"  # where RFC and POSIX part ways
    assert posixpath.normpath("/workspace//../etc") == "/etc"


def test_no_uri_a_server_resolves_outside_the_workspace_is_allowed(tmp_path):
    generated = generate(12_000)
    benign = BENIGN + harmless(500)
    uris = generated + HAND_WRITTEN + TOLERATED + benign
    started = time.monotonic()
    decisions = decide(uris, ["file:///workspace/*"], tmp_path)
    elapsed = time.monotonic() - started
    by_uri = dict(zip(uris, decisions))
    escaping = [uri for uri in generated if escape_reason(uri) is not None]
    allowed = [uri for uri in generated if by_uri[uri] != "deny"]
    print(f"\n{len(uris)} URIs ({len(generated)} generated: {len(escaping)} escaping, {len(allowed)} allowed) decided "
          f"in {elapsed:.1f}s: {decisions.count('allow')} allowed, {decisions.count('audit')} audited, "
          f"{decisions.count('deny')} denied; harmless but refused: {[u for u in TOLERATED if by_uri[u] == 'deny']}")
    assert len(escaping) > 6_000, "the generator should produce many escaping URIs"
    # Not a blanket deny: every plainly harmless URI passes.
    refused = [uri for uri in benign if by_uri[uri] != "allow"]
    assert not refused, f"{len(refused)} harmless URIs refused, e.g. {refused[:10]!r}"
    found = counterexamples(uris, decisions)
    assert not found, describe(found)


def naive_prefix(uri: str) -> bool:
    return uri.startswith("file:///workspace/")


def decode_then_prefix(uri: str) -> bool:
    return unquote(unquote(uri)).replace("\\", "/").startswith("file:///workspace/")


def dot_segments_without_decoding(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    path = remove_dot_segments(parts.path)
    return (parts.scheme.lower(), parts.netloc) == ("file", "") and path.startswith("/workspace/")


def test_the_comparison_can_fail(tmp_path):
    """The oracle has teeth: mcpgw with a rule allowing every file URI, and three classic broken matchers (prefix on
    the raw text; prefix after decoding, dot segments ignored; dot segments removed, `%2e%2e` not decoded), are each
    caught many times over, on the URI that shows their flaw among others."""
    uris = generate(12_000) + HAND_WRITTEN
    permissive = decide(uris, ["file:*"], tmp_path)
    # mcpgw refuses ambiguous URIs before any pattern is consulted, so even `file:*` leaves only the plainly
    # escaping ones (217 when this was written).
    assert len(counterexamples(uris, permissive)) > 150
    mutants = {naive_prefix: "file:///workspace/../etc/passwd",
               decode_then_prefix: "file:///workspace/%2e%2e/etc/passwd",
               dot_segments_without_decoding: "file:///workspace/%2e%2e/etc/passwd"}
    for mutant, telling in mutants.items():
        found = dict(counterexamples(uris, ["allow" if mutant(uri) else "deny" for uri in uris]))
        assert len(found) > 500 and telling in found, (mutant.__name__, len(found))


def test_dot_segments_after_a_query_or_fragment_are_refused(tmp_path):
    decisions = decide(REFUSED_EVEN_IF_SPLIT_SAFE, ["file:///workspace/*"], tmp_path)
    assert decisions == ["deny"] * len(REFUSED_EVEN_IF_SPLIT_SAFE), list(zip(REFUSED_EVEN_IF_SPLIT_SAFE, decisions))
