"""Differential test of StrictJSON against Python's `json` (with duplicate keys refused and NaN/Infinity refused,
i.e. RFC 8259 as mcpgw reads it): seeded mutations of JSON documents go through both; they must agree on accept or
reject, and on the value of what both accept. StrictJSON is stricter by design in exactly two places, which are
allowed to differ and are counted: escapes that leave a lone surrogate (Python accepts them), and nesting deeper than
mcpgw's limit (64).

StrictJSON is reached through the ordinary build's `mcpgw-fuzz --json-verdicts FILE...`."""
import json
import pathlib
import random
import subprocess

from conftest import mcpgw_binary

FUZZ = pathlib.Path(mcpgw_binary()).parent / "mcpgw-fuzz"
SEEDS = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a/b.txt"}}}',
    b'[1, -0, 2.5e-3, 1E+2, true, false, null, "x", {"a": [], "b": {}}]',
    b'{"\\u0061":"\\ud83d\\ude00\\n\\t\\"\\\\\\/","b":"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"}',
    b'"just a string"',
    b'  {"nested": {"deeper": {"deepest": [[[{"k": 123456789012345678901234567890}]]]}}}  ',
]
PIECES = [b'"a"', b'"a":1', b",", b":", b"{", b"}", b"[", b"]", b'"\\u0061"', b'"\\ud800"', b'"\\udc00"', b"\\u00",
          b"01", b"1.", b".5", b"-", b"1e400", b"NaN", b"Infinity", b"\x00", b"\x1f", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf",
          b"\xc2\xa0", b"\t", b"\r\n", b'"\\x41"', b"tru", b"nul", b'""', b'"a":1,"a":2', b'"\\u0041":1,"A":2']


class Duplicate(Exception):
    pass


def pairs(items):
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        raise Duplicate()
    return dict(items)


def refuse_constant(name):
    raise ValueError(name)


def python_value(data: bytes):
    text = data.decode("utf-8")  # invalid UTF-8 raises
    return json.loads(text, object_pairs_hook=pairs, parse_constant=refuse_constant)


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        position = rng.randint(0, len(data))
        if choice < 0.35:
            data[position:position] = rng.choice(PIECES)
        elif choice < 0.6 and data:
            del data[position:position + rng.randint(1, 3)]
        elif choice < 0.8 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256) if rng.random() < 0.3 else rng.choice(b'{}[],:"\\0123456789aeE.-+ ')
        else:
            depth = rng.choice([10, 63, 64, 65, 100])
            data = bytearray(b"[" * depth + bytes(data) + b"]" * depth) if rng.random() < 0.5 else data
    return bytes(data)


def depth(data: bytes) -> int:
    deepest = current = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            current += 1
            deepest = max(deepest, current)
        elif byte in b"]}":
            current -= 1
    return deepest


def has_lone_surrogate(value) -> bool:
    """Whether Python's reading holds a surrogate code point: a `\\uD800`-`\\uDFFF` escape without its pair, which
    Python keeps and StrictJSON refuses (no UTF-8 can carry it)."""
    if isinstance(value, str):
        return any(0xD800 <= ord(character) <= 0xDFFF for character in value)
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(key) or has_lone_surrogate(item) for key, item in value.items())
    return False


def test_strictjson_agrees_with_python_json(tmp_path):
    rng = random.Random(20261125)
    inputs = SEEDS + [mutate(rng, rng.choice(SEEDS)) for _ in range(4000)]
    paths = []
    for index, data in enumerate(inputs):
        path = tmp_path / f"{index}.json"
        path.write_bytes(data)
        paths.append(str(path))
    verdicts = subprocess.run([str(FUZZ), "--json-verdicts", *paths], capture_output=True, text=True, check=True,
                              timeout=300).stdout.splitlines()
    assert len(verdicts) == len(inputs)
    disagreements, allowed, accepted = [], {"lone surrogate": 0, "depth": 0}, 0
    for data, verdict in zip(inputs, verdicts):
        try:
            expected = python_value(data)
            python_accepts = True
        except (ValueError, Duplicate, UnicodeDecodeError, RecursionError):
            python_accepts = False
        strict_accepts = verdict.startswith("accept ")
        if strict_accepts and python_accepts:
            accepted += 1
            if python_value(verdict[len("accept "):].encode("utf-8")) != expected:
                disagreements.append(("value", data, verdict))
            continue
        if strict_accepts == python_accepts:
            continue
        if python_accepts and not strict_accepts:
            if has_lone_surrogate(python_value(data)):
                allowed["lone surrogate"] += 1
                continue
            if depth(data) > 64:
                allowed["depth"] += 1
                continue
        disagreements.append(("strict accepts" if strict_accepts else "python accepts", data, verdict))
    assert not disagreements, "\n".join(f"{kind}: {data!r} -> {verdict}" for kind, data, verdict in disagreements[:20])
    # The run must have tested something on both sides.
    assert accepted > 100 and sum(1 for v in verdicts if v == "reject") > 1000, (accepted, allowed)
