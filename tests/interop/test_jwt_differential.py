"""Differential test of mcpgw's bearer-JWT verification against PyJWT.

About 1500 tokens from a seeded RNG go through `mcpgw-fuzz --jwt-verdicts` (the authenticator of mcpgw.dev.json,
from the repository root) in one call: valid RS256 and HS256 tokens of both development tenants, and mutations of
their header, claims, signature and encoding. The oracle is PyJWT's `jwt.decode` with the key chosen by `kid` (or by
the issuer when it has exactly one key), `algorithms` = that key's algorithm, the gateway's audience, the key's
tenant's issuers, the configured leeway and `exp`/`iss`/`aud` required, plus the rules of the README ("Identity: who
is calling") that PyJWT does not have: the size limit, NumericDate claims that are JSON numbers, the tenant claim equal
to the tenant of the signing key, `sub` present and a valid agent id, `scope` a string and `scp` a string or an array
of strings. Both must agree on accept or reject, and on the tenant and agent of every token they accept.

mcpgw is stricter than PyJWT by design in documented places: non-canonical base64url (PyJWT accepts `=` padding),
duplicate JSON keys (PyJWT keeps the last value) and a `crit` header (PyJWT understands `b64`). A token the oracle
accepts may be refused, as `malformed_token`, only when it falls into one of those categories; they are counted.
Tokens whose `exp`/`nbf`/`iat` boundary (± leeway) falls inside the run's time window are set aside (mutations stay
at least 5 s away from a boundary, so normally there are none)."""
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import pathlib
import random
import re
import subprocess
import time
from collections import Counter

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from conftest import ROOT, mcpgw_binary

FUZZ = pathlib.Path(mcpgw_binary()).parent / "mcpgw-fuzz"
CONFIG = json.loads((ROOT / "mcpgw.dev.json").read_text())
AUDIENCE = CONFIG["identity"]["audience"]
LEEWAY = CONFIG["identity"]["leeway_seconds"]
MAX_BYTES = CONFIG["identity"]["max_token_bytes"]
ISSUERS = {tenant: settings["jwt"]["issuers"] for tenant, settings in CONFIG["tenants"].items()}
TENANT_OF_ISSUER = {issuer: tenant for tenant, issuers in ISSUERS.items() for issuer in issuers}
AGENT = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
B64URL = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
STRICTER_BY_DESIGN = {"base64url padding", "base64url trailing bits", "duplicate JSON keys", "crit header"}


@dataclasses.dataclass(frozen=True)
class Key:
    kid: str
    tenant: str
    alg: str
    verifying: bytes  # what PyJWT verifies with: the public key PEM or the HMAC secret
    signing: bytes  # the private key PEM or the HMAC secret


def configured_keys() -> dict[str, Key]:
    keys = {}
    for tenant, settings in CONFIG["tenants"].items():
        for entry in settings["jwt"]["keys"]:
            if "secret_file" in entry:
                secret = (ROOT / entry["secret_file"]).read_bytes()
                keys[entry["kid"]] = Key(entry["kid"], tenant, entry["alg"], secret, secret)
            else:
                public = (ROOT / entry["public_key_file"]).read_bytes()
                private = (ROOT / (entry["public_key_file"].removesuffix(".pub") + ".key")).read_bytes()
                keys[entry["kid"]] = Key(entry["kid"], tenant, entry["alg"], public, private)
    return keys


KEYS = configured_keys()
KIDS = sorted(KEYS)
KEYS_OF_TENANT = {tenant: [key for key in KEYS.values() if key.tenant == tenant] for tenant in ISSUERS}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@functools.lru_cache(maxsize=None)
def prepared(alg: str, material: bytes):
    algorithm = jwt.get_algorithm_by_name(alg)
    return algorithm, algorithm.prepare_key(material)


def sign(alg: str, material: bytes, message: bytes) -> bytes:
    if alg.startswith("HS"):  # by hand: PyJWT refuses PEM text as an HMAC secret (the algorithm-confusion tokens)
        return hmac.new(material, message, {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
                                             "HS512": hashlib.sha512}[alg]).digest()
    algorithm, key = prepared(alg, material)
    return algorithm.sign(message, key)


ATTACKER_EC = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
ATTACKER_ED = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Raw(str):
    """JSON text written as is (an escaped key, for example)."""


def json_text(value, rng: random.Random) -> str:
    """`value` as JSON; a list of pairs is an object that may repeat keys."""
    spaced = rng.random() < 0.2
    ascii_only = rng.random() < 0.5

    def write(item) -> str:
        if isinstance(item, Raw):
            return str(item)
        if isinstance(item, Pairs):
            comma, colon = (", ", ": ") if spaced else (",", ":")
            return "{" + comma.join(write(k) + colon + write(v) for k, v in item) + "}"
        if isinstance(item, dict):
            return write(Pairs(item.items()))
        if isinstance(item, list):
            return "[" + ",".join(write(element) for element in item) + "]"
        return json.dumps(item, ensure_ascii=ascii_only)

    return write(value)


class Pairs(list):
    """An object as a list of (key, value), so that keys can repeat."""


def segments_of(header, claims, rng) -> tuple[str, str]:
    return b64(json_text(header, rng).encode()), b64(json_text(claims, rng).encode())


def signed(header_segment: str, payload_segment: str, alg: str, material: bytes) -> str:
    signature = sign(alg, material, f"{header_segment}.{payload_segment}".encode())
    return f"{header_segment}.{payload_segment}.{b64(signature)}"


class Factory:
    """Seeded token generator; `now` is the time every claim is relative to."""

    def __init__(self, rng: random.Random, now: int):
        self.rng, self.now = rng, now
        self.minted: list[str] = []

    # Valid material

    def agent(self) -> str:
        rng = self.rng
        choice = rng.random()
        if choice < 0.5:
            return rng.choice(["bot1", "agent-7", "svc.reader", "ci:deploy", "ops@acme", "a", "A_b-c.d:e@f"])
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@"
        length = 128 if choice < 0.6 else rng.randint(1, 40)
        return "".join(rng.choice(alphabet) for _ in range(length))

    def key(self, kid: str | None = None) -> Key:
        return KEYS[kid or self.rng.choice(KIDS)]

    def header(self, key: Key) -> Pairs:
        members = [("alg", key.alg), ("kid", key.kid)]
        if self.rng.random() < 0.4:
            members.append(("typ", "JWT"))
        self.rng.shuffle(members)
        return Pairs(members)

    def claims(self, tenant: str) -> dict:
        rng, now = self.rng, self.now
        body = {"iss": rng.choice(ISSUERS[tenant]), "sub": self.agent(), "aud": AUDIENCE, "tenant": tenant,
                "iat": now - rng.randint(0, 3000), "exp": now + rng.randint(120, 86400)}
        if rng.random() < 0.3:
            body["aud"] = rng.choice([[AUDIENCE], ["other", AUDIENCE], [AUDIENCE, "https://api.example"]])
        if rng.random() < 0.3:
            body["nbf"] = now - rng.randint(0, 3000)
        if rng.random() < 0.3:
            body["jti"] = f"id-{rng.randrange(10**9)}"
        if rng.random() < 0.4:
            body["scope"] = rng.choice(["tools:read", "tools:read tools:write", "", "  admin  tools:call "])
        if rng.random() < 0.3:
            body["scp"] = rng.choice([["tools:read"], [], ["a", "b", "c"], "tools:write admin"])
        if rng.random() < 0.1:
            body["note"] = rng.choice(["héllo wörld", "😀 emoji", "tab\tand\nnewline", {"nested": [1, 2.5, None, True]}])
        if rng.random() < 0.1:
            body["exp"] = body["exp"] + 0.75
        return body

    def parts(self, kid: str | None = None) -> tuple[Key, Pairs, dict]:
        key = self.key(kid)
        return key, self.header(key), self.claims(key.tenant)

    def mint(self, key: Key, header, claims, alg: str | None = None, material: bytes | None = None) -> str:
        h, p = segments_of(header, self.shuffle(claims), self.rng)
        token = signed(h, p, alg or key.alg, key.signing if material is None else material)
        self.minted.append(token)
        return token

    def shuffle(self, claims):
        if isinstance(claims, dict):
            members = list(claims.items())
            self.rng.shuffle(members)
            return Pairs(members)
        return claims

    def with_claims(self, kid=None, **changes) -> str:
        """A token with claims changed (a value of `...` removes the claim)."""
        key, header, claims = self.parts(kid)
        for name, value in changes.items():
            if value is ...:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self.mint(key, header, claims)

    def with_header(self, members, kid=None, alg=None, material=None) -> str:
        key, _, claims = self.parts(kid)
        return self.mint(key, Pairs(members), claims, alg=alg, material=material)

    def edge(self) -> int:
        return self.rng.randint(5, 40)

    # Categories

    def valid(self) -> str:
        return self.mint(*self.parts())

    def header_alg_case(self) -> str:
        key = self.key()
        spelled = self.rng.choice([key.alg.lower(), key.alg.capitalize(), key.alg + " ", " " + key.alg,
                                   key.alg[:2].lower() + key.alg[2:], key.alg.replace("256", "-256")])
        return self.with_header([("alg", spelled), ("kid", key.kid)], kid=key.kid)

    def header_alg_none(self) -> str:
        key = self.key()
        members = [("alg", self.rng.choice(["none", "None", "NONE", "nOnE"]))]
        if self.rng.random() < 0.8:
            members.append(("kid", key.kid))
        h, p = segments_of(Pairs(members), self.shuffle(self.claims(key.tenant)), self.rng)
        signature = self.rng.choice(["", "AAAA", b64(sign("HS256", KEYS[KIDS[0]].signing, f"{h}.{p}".encode()))])
        return f"{h}.{p}.{signature}"

    def header_alg_other(self) -> str:
        key = self.key()
        if key.alg == "RS256":
            alg = self.rng.choice(["RS384", "RS512", "PS256", "PS384", "ES256", "EdDSA"])
            material = {"ES256": ATTACKER_EC, "EdDSA": ATTACKER_ED}.get(alg, key.signing)
        else:
            alg, material = self.rng.choice(["HS384", "HS512"]), key.signing
        return self.with_header([("alg", alg), ("kid", key.kid)], kid=key.kid, material=material, alg=alg)

    def header_alg_missing(self) -> str:
        key = self.key()
        members = [("kid", key.kid)] + ([] if self.rng.random() < 0.4 else
                                        [("alg", self.rng.choice([256, None, [key.alg], {"name": key.alg}, ""]))])
        return self.with_header(members, kid=key.kid)

    def header_hs_with_rsa_kid(self) -> str:
        key = self.key(self.rng.choice([kid for kid in KIDS if KEYS[kid].alg == "RS256"]))
        public = self.rng.choice([key.verifying, key.verifying.strip(), key.verifying.replace(b"\n", b"")])
        return self.with_header([("alg", "HS256"), ("kid", key.kid)], kid=key.kid, alg="HS256", material=public)

    def header_rs_with_hs_kid(self) -> str:
        hs = self.key(self.rng.choice([kid for kid in KIDS if KEYS[kid].alg == "HS256"]))
        rs = KEYS[f"{hs.tenant}-rs256"]
        return self.with_header([("alg", "RS256"), ("kid", hs.kid)], kid=hs.kid, alg="RS256", material=rs.signing)

    def header_kid_missing(self) -> str:
        key = self.key()
        members = [("alg", key.alg)] + ([("typ", "JWT")] if self.rng.random() < 0.5 else [])
        return self.with_header(members, kid=key.kid)

    def header_kid_unknown(self) -> str:
        key = self.key()
        kid = self.rng.choice([key.kid.upper(), key.kid + " ", " " + key.kid, key.kid + "x", "", "acme", "unknown",
                               key.kid.replace("-", "_"), key.kid + "\u0000", key.kid.replace("s", "\u0455")])
        return self.with_header([("alg", key.alg), ("kid", kid)], kid=key.kid)

    def header_kid_nonstring(self) -> str:
        key = self.key()
        kid = self.rng.choice([1, None, [key.kid], {"kid": key.kid}, True])
        return self.with_header([("alg", key.alg), ("kid", kid)], kid=key.kid)

    def header_kid_cross_tenant(self) -> str:
        key, header, claims = self.parts()
        other = self.rng.choice([k for k in KEYS.values() if k.tenant != key.tenant and k.alg == key.alg])
        variant = self.rng.randrange(3)
        if variant == 0:  # other tenant's kid and key, this tenant's claims: wrong issuer
            return self.mint(other, Pairs([("alg", other.alg), ("kid", other.kid)]), claims)
        if variant == 1:  # other tenant's kid, key and issuer, this tenant's tenant claim: tenant mismatch
            claims["iss"] = ISSUERS[other.tenant][0]
            return self.mint(other, Pairs([("alg", other.alg), ("kid", other.kid)]), claims)
        return self.mint(key, header, claims, material=other.signing)  # this kid, other tenant's key

    def header_extras(self) -> str:
        key, header, claims = self.parts()
        extra = self.rng.choice([("typ", "at+jwt"), ("typ", 5), ("cty", "JWT"), ("jku", "https://evil.example/jwks"),
                                 ("x5u", "https://evil.example/cert.pem"), ("x5t", "abc"), ("b64", True),
                                 ("jwk", {"kty": "oct", "k": b64(b"attacker")}), ("zip", "DEF"),
                                 ("x-custom", [1, {"a": None}]), ("kid2", "acme-hs256")])
        header = Pairs([member for member in header if member[0] != extra[0]] + [extra])
        return self.mint(key, header, claims)

    def header_crit(self) -> str:
        key, header, claims = self.parts()
        header += self.rng.choice([[("b64", True), ("crit", ["b64"])], [("crit", ["exp"]), ("exp", 1)], [("crit", [])],
                                   [("crit", "b64"), ("b64", True)], [("crit", ["b64"])], [("crit", None)],
                                   [("crit", ["b64"]), ("b64", True), ("typ", "JWT")]])
        return self.mint(key, header, claims)

    def header_duplicate(self) -> str:
        key, _, claims = self.parts()
        alg, kid = ("alg", key.alg), ("kid", key.kid)
        escaped_alg = (Raw('"\\u0061lg"'), key.alg)
        members = self.rng.choice([
            [("alg", "none"), alg, kid], [("kid", "unknown"), alg, kid], [alg, alg, kid], [alg, kid, kid],
            [alg, ("kid", KEYS[self.rng.choice(KIDS)].kid), kid], [("alg", "HS512"), kid, alg],
            [alg, kid, ("kid", "unknown")], [("alg", "none"), kid, escaped_alg], [alg, kid, ("typ", "JWT"), ("typ", "x")],
        ])
        return self.mint(key, Pairs(members), claims)

    def payload_exp(self) -> str:
        now, edge = self.now, self.edge()
        return self.with_claims(exp=self.rng.choice([
            now - LEEWAY + edge, now - LEEWAY - edge, now - LEEWAY + edge + 0.5, now - LEEWAY - edge - 0.5,
            now - self.rng.randint(100, 10**6), now + edge, now - edge, 0, -1, ..., None, str(now + 600),
            True, [now + 600], {"t": now + 600}, now + 10**9, 99999999999999, float(now + 600),
        ]))

    def payload_nbf(self) -> str:
        now, edge = self.now, self.edge()
        return self.with_claims(nbf=self.rng.choice([
            now + LEEWAY - edge, now + LEEWAY + edge, now + LEEWAY - edge - 0.5, now + self.rng.randint(100, 10**6),
            now - edge, 0, None, str(now), False, [now], now + LEEWAY + edge + 0.25,
        ]))

    def payload_iat(self) -> str:
        now, edge = self.now, self.edge()
        return self.with_claims(iat=self.rng.choice([
            now + LEEWAY - edge, now + LEEWAY + edge, now + self.rng.randint(100, 10**6), now - 10**6, 0, None,
            str(now), True, {"t": now}, now + LEEWAY - edge + 0.9, -5,
        ]))

    def payload_aud(self) -> str:
        return self.with_claims(aud=self.rng.choice([
            AUDIENCE, [AUDIENCE], ["other", AUDIENCE], ["other"], "other", ..., "", [], AUDIENCE.upper(),
            [AUDIENCE, 1], {AUDIENCE: True}, None, AUDIENCE + " ", " " + AUDIENCE, "https://" + AUDIENCE,
            [[AUDIENCE]], [AUDIENCE, AUDIENCE], [None, AUDIENCE],
        ]))

    def payload_iss(self) -> str:
        key, header, claims = self.parts()
        other = next(t for t in ISSUERS if t != key.tenant)
        issuer = ISSUERS[key.tenant][0]
        claims["iss"] = self.rng.choice([ISSUERS[other][0], issuer + "/", issuer.upper(), issuer.replace("https", "http"),
                                         ..., None, 5, [issuer], issuer + "\u0000", "", issuer])
        if claims["iss"] is ...:
            del claims["iss"]
        return self.mint(key, header, claims)

    def payload_tenant(self) -> str:
        key, header, claims = self.parts()
        other = next(t for t in ISSUERS if t != key.tenant)
        claims["tenant"] = self.rng.choice([other, ..., "unknown", key.tenant.upper(), key.tenant + " ", 1, None,
                                            [key.tenant], "", key.tenant])
        if claims["tenant"] is ...:
            del claims["tenant"]
        return self.mint(key, header, claims)

    def payload_sub(self) -> str:
        return self.with_claims(sub=self.rng.choice([
            "bot 1", "bot/1", "bot#1", "bøt", "bot\n1", "", "a" * 129, "a" * 128, ".-_:@", "user@example.com",
            "spiffe:x", ..., 5, None, ["bot1"], "\uff42\uff4f\uff54", "bot\u0000", "bot1\u200b", "tab\t", "x" * 200,
            "Z9", "bot+1", "bot%31", "\u212abot",
        ]))

    def payload_scope(self) -> str:
        choice = self.rng.random()
        if choice < 0.5:
            return self.with_claims(scope=self.rng.choice(["a b", "", "  a  ", ["a"], 5, None, True, {}, "tools:read"]))
        return self.with_claims(scp=self.rng.choice(["a b", ["a", "b"], [], ["a", 1], 5, {}, None, [["a"]], [None],
                                                     ["tools:read", "tools:write"]]))

    def payload_other_claims(self) -> str:
        name, value = self.rng.choice([("jti", "x"), ("jti", 5), ("jti", None), ("jti", ""), ("note", "é😀"),
                                       ("nested", {"a": [{"b": {"c": [1, 2, 3]}}]}), ("n", 1e300), ("n", -0.0),
                                       ("n", 123456789012345678901234567890), ("flag", False), ("act", {"sub": "x"})])
        return self.with_claims(**{name: value})

    def payload_duplicate(self) -> str:
        key, header, claims = self.parts()
        other = next(t for t in ISSUERS if t != key.tenant)
        variant = self.rng.randrange(9)
        members = list(self.shuffle(claims))
        if variant == 0:
            members.insert(0, ("tenant", other))
        elif variant == 1:
            members.insert(0, ("exp", self.now - 10**5))
        elif variant == 2:
            members.insert(0, ("sub", "bad name"))
        elif variant == 3:
            members.insert(0, ("aud", "other"))
        elif variant == 4:
            members.append(("sub", claims["sub"]))
        elif variant == 5:
            members.insert(0, (Raw('"\\u0074enant"'), other))
        elif variant == 6:
            members.append(("ctx", Pairs([("a", 1), ("a", 2)])))
        elif variant == 7:
            members.append(("tenant", other))  # last value wrong: both refuse
        else:
            members.append(("ctx", [Pairs([("role", "user"), ("role", "admin")])]))
        return self.mint(key, header, Pairs(members))

    def signature_bitflip(self) -> str:
        h, p, s = self.valid().split(".")
        signature = bytearray(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        bit = self.rng.randrange(len(signature) * 8)
        signature[bit // 8] ^= 1 << (bit % 8)
        return f"{h}.{p}.{b64(bytes(signature))}"

    def signature_truncate(self) -> str:
        h, p, s = self.valid().split(".")
        cut = self.rng.choice([1, 2, 3, 4, len(s) // 2, len(s) - 1])
        return f"{h}.{p}.{s[:-cut]}"

    def signature_swap(self) -> str:
        token = self.valid()
        donor = self.rng.choice([t for t in self.minted if t != token and t.count(".") == 2] or [self.valid()])
        h, p, _ = token.split(".")
        return f"{h}.{p}.{donor.split('.')[2]}"

    def signature_other(self) -> str:
        h, p, s = self.valid().split(".")
        return self.rng.choice([f"{h}.{p}.", f"{h}.{p}.{s}AA", f"{h}.{p}.{s}{s}",
                                f"{h}.{p}.{b64(sign('HS256', b'attacker secret', f'{h}.{p}'.encode()))}",
                                f"{h}.{p}.{b64(b'')}", f"{h}.{p}.AAAA"])

    def reencoded(self, mutate) -> str:
        """A token whose segments `mutate(list of segments, key)` changes; re-signed when the header or payload
        changed, so that the signature stays valid over the text as sent."""
        key, header, claims = self.parts()
        h, p = segments_of(header, self.shuffle(claims), self.rng)
        segments = [h, p, b64(sign(key.alg, key.signing, f"{h}.{p}".encode()))]
        index = mutate(segments)
        if index in (0, 1):
            segments[2] = b64(sign(key.alg, key.signing, f"{segments[0]}.{segments[1]}".encode()))
        return ".".join(segments)

    def encoding_padding(self) -> str:
        def pad(segments):
            index = self.rng.choice([i for i in range(3) if len(segments[i]) % 4] or [0])
            count = -len(segments[index]) % 4 if self.rng.random() < 0.8 else self.rng.choice([1, 3, 4])
            segments[index] += "=" * count
            return index
        return self.reencoded(pad)

    def encoding_trailing_bits(self) -> str:
        def stray(segments):
            index = self.rng.choice([i for i in range(3) if len(segments[i]) % 4 in (2, 3)])
            segment = segments[index]
            unused = 4 if len(segment) % 4 == 2 else 2
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            value = alphabet.index(segment[-1]) | self.rng.randint(1, (1 << unused) - 1)
            segments[index] = segment[:-1] + alphabet[value]
            return index
        return self.reencoded(stray)

    def encoding_std_alphabet(self) -> str:
        def standard(segments):
            index = self.rng.choice([i for i in range(3) if set(segments[i]) & {"-", "_"}] or [2])
            segments[index] = segments[index].replace("-", "+").replace("_", "/")
            return index
        return self.reencoded(standard)

    def encoding_whitespace(self) -> str:
        def space(segments):
            index = self.rng.randrange(3)
            position = self.rng.choice([0, len(segments[index]), self.rng.randint(0, len(segments[index]))])
            character = self.rng.choice([" ", "\t", "\r", "\x0b", "\x0c", "\u00a0", "  "])
            if character == "\r" and index == 2 and position == len(segments[2]):
                position -= 1  # mcpgw-fuzz reads lines as Swift Characters, where "\r\n" is one
            segments[index] = segments[index][:position] + character + segments[index][position:]
            return index
        return self.reencoded(space)

    def encoding_non_ascii(self) -> str:
        def insert(segments):
            index = self.rng.randrange(3)
            position = self.rng.randint(0, len(segments[index]))
            segments[index] = segments[index][:position] + self.rng.choice(["é", "\u200b", "\uff21", "😀"]) + segments[index][position:]
            return index
        return self.reencoded(insert)

    def encoding_segments(self) -> str:
        h, p, s = self.valid().split(".")
        return self.rng.choice([f"{h}.{p}", f"{h}.{p}.{s}.{s}", f"{h}.{p}.{s}.", f".{h}.{p}.{s}", f"{h}..{p}.{s}",
                                f"{h}.{p}.{s}.{p}.{s}", f"{h}", "", ".", "..", "...", f"{p}.{s}", f"{h}.{h}.{p}.{s}"])

    def json_shape(self) -> str:
        key, header, claims = self.parts()
        texts = [json_text(header, self.rng), json_text(self.shuffle(claims), self.rng)]
        index = self.rng.randrange(2)
        texts[index] = self.rng.choice(["[]", '"x"', "null", "1", "", texts[index][:-1], texts[index] + "}",
                                        texts[index] + " x", "{}", " " + texts[index] + "\n", "[" + texts[index] + "]"])
        h, p = b64(texts[0].encode()), b64(texts[1].encode())
        return signed(h, p, key.alg, key.signing)

    def encoding_size(self) -> str:
        """Just under or just over the size limit, valid otherwise."""
        key, header, claims = self.parts()
        low, high = (MAX_BYTES - 40, MAX_BYTES) if self.rng.random() < 0.5 else (MAX_BYTES + 1, MAX_BYTES + 40)
        h = b64(json_text(header, self.rng).encode())
        fixed = len(h) + 2 + len(b64(sign(key.alg, key.signing, b"")))
        claims["pad"] = ""
        room = (low - fixed) * 3 // 4 - len(json_text(claims, self.rng).encode())
        for filler in range(room - 60, room + 60):
            claims["pad"] = "x" * filler
            p = b64(json_text(claims, self.rng).encode())
            if low <= fixed + len(p) <= high:
                return signed(h, p, key.alg, key.signing)
        raise AssertionError("no filler length fits")


PLAN = {  # category → how many tokens
    "valid": 320, "header_alg_case": 40, "header_alg_none": 40, "header_alg_other": 40, "header_alg_missing": 25,
    "header_hs_with_rsa_kid": 30, "header_rs_with_hs_kid": 20, "header_kid_missing": 25, "header_kid_unknown": 30,
    "header_kid_nonstring": 15, "header_kid_cross_tenant": 30, "header_extras": 40, "header_crit": 40,
    "header_duplicate": 50, "payload_exp": 70, "payload_nbf": 50, "payload_iat": 50, "payload_aud": 60,
    "payload_iss": 40, "payload_tenant": 50, "payload_sub": 70, "payload_scope": 60, "payload_other_claims": 30,
    "payload_duplicate": 60, "signature_bitflip": 40, "signature_truncate": 30, "signature_swap": 30,
    "signature_other": 25, "encoding_padding": 50, "encoding_trailing_bits": 40, "encoding_std_alphabet": 30,
    "encoding_whitespace": 40, "encoding_non_ascii": 10, "encoding_segments": 35, "json_shape": 25,
    "encoding_size": 20,
}


# The oracle


class Duplicate(Exception):
    pass


def no_duplicates(pairs):
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Duplicate()
    return dict(pairs)


def pyjwt_segment(segment: str) -> bytes | None:
    """The segment as PyJWT decodes it, or None when PyJWT refuses it."""
    try:
        return jwt.api_jws.PyJWS._decode_base64url_segment(segment.encode(), "segment")
    except (jwt.exceptions.DecodeError, UnicodeEncodeError):
        return None


def stricter_by_design(token: str) -> set[str]:
    """The documented rules under which mcpgw refuses what PyJWT reads."""
    reasons = set()
    segments = token.split(".")
    if len(segments) != 3:
        return reasons
    for segment in segments:
        if pyjwt_segment(segment) is None:
            continue
        if "=" in segment:
            reasons.add("base64url padding")
        elif not set(segment) <= B64URL or len(segment) % 4 == 1:
            reasons.add("base64url other")
        elif segment != b64(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))):
            reasons.add("base64url trailing bits")
    for index in (0, 1):
        data = pyjwt_segment(segments[index])
        if data is None:
            continue
        try:
            value = json.loads(data, object_pairs_hook=no_duplicates)
        except Duplicate:
            reasons.add("duplicate JSON keys")
            value = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if index == 0 and isinstance(value, dict) and "crit" in value:
            reasons.add("crit header")
    return reasons


def unverified_payload(token: str) -> dict:
    payload = json.loads(jwt.api_jws.decode_complete(token, options={"verify_signature": False})["payload"])
    if not isinstance(payload, dict):
        raise jwt.exceptions.DecodeError("payload is not an object")
    return payload


def oracle(token: str) -> tuple:
    """("accept", tenant, agent) or ("reject", why)."""
    if len(token.encode()) > MAX_BYTES:
        return ("reject", "larger than max_token_bytes")
    try:
        header = jwt.get_unverified_header(token)
        if "kid" in header:
            key = KEYS.get(header["kid"])
            if key is None:
                return ("reject", f"unknown kid {header['kid']!r}")
        else:
            tenant = TENANT_OF_ISSUER.get(unverified_payload(token).get("iss"))
            if tenant is None or len(KEYS_OF_TENANT[tenant]) != 1:
                return ("reject", "no kid, and the issuer does not have exactly one key")
            key = KEYS_OF_TENANT[tenant][0]
        claims = jwt.decode(token, key.verifying, algorithms=[key.alg], audience=AUDIENCE, issuer=ISSUERS[key.tenant],
                            leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]})
    except jwt.exceptions.PyJWTError as error:
        return ("reject", f"PyJWT: {type(error).__name__}: {error}")
    for name in ("exp", "nbf", "iat"):  # NumericDate is a JSON number; PyJWT takes anything int() takes
        if name in claims and (isinstance(claims[name], bool) or not isinstance(claims[name], (int, float))):
            return ("reject", f"{name} is not a number")
    if claims.get("tenant") != key.tenant:
        return ("reject", f"tenant claim {claims.get('tenant')!r} is not the key's tenant {key.tenant!r}")
    agent = claims.get("sub")
    if not isinstance(agent, str) or not AGENT.fullmatch(agent):
        return ("reject", f"sub {agent!r} is not a valid agent id")
    if "scope" in claims and not isinstance(claims["scope"], str):
        return ("reject", "scope is not a string")
    scp = claims.get("scp", [])
    if not isinstance(scp, str) and not (isinstance(scp, list) and all(isinstance(s, str) for s in scp)):
        return ("reject", "scp is neither a string nor an array of strings")
    return ("accept", key.tenant, agent)


def time_boundaries(token: str) -> list[float]:
    """The instants at which the token's verdict can change (exp + leeway, nbf - leeway, iat - leeway)."""
    try:
        claims = unverified_payload(token)
    except (jwt.exceptions.PyJWTError, ValueError):
        return []
    shifts = {"exp": LEEWAY, "nbf": -LEEWAY, "iat": -LEEWAY}
    return [int(claims[name]) + shift for name, shift in shifts.items()
            if isinstance(claims.get(name), (int, float)) and not isinstance(claims[name], bool)]


def test_mcpgw_jwt_verification_agrees_with_pyjwt(tmp_path):
    started = time.monotonic()
    rng = random.Random(20261125)
    factory = Factory(rng, int(time.time()))
    cases = [(category, getattr(factory, category)()) for category, count in PLAN.items() for _ in range(count)]
    assert all("\n" not in token and not token.endswith("\r") for _, token in cases)
    path = tmp_path / "tokens.txt"
    path.write_bytes("".join(token + "\n" for _, token in cases).encode())

    window_start = time.time()
    result = subprocess.run([str(FUZZ), "--jwt-verdicts", str(path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, check=True)
    verdicts = result.stdout.split("\n")[:-1]
    assert len(verdicts) == len(cases), result.stderr
    expectations = [(oracle(token), stricter_by_design(token)) for _, token in cases]
    window_end = time.time()

    outcomes, stricter, ambiguous, disagreements = Counter(), Counter(), 0, []
    for (category, token), verdict, (expected, reasons) in zip(cases, verdicts, expectations):
        if any(window_start - 1 <= instant <= window_end + 1 for instant in time_boundaries(token)):
            ambiguous += 1
            continue
        words = verdict.split(" ")
        got = ("accept", words[1], words[2]) if words[0] == "accept" and len(words) == 3 else ("reject", words[-1])
        outcomes[got[0]] += 1
        if expected[0] == "accept" and got[0] == "reject" and got[1] == "malformed_token" and reasons & STRICTER_BY_DESIGN:
            for reason in reasons & STRICTER_BY_DESIGN:
                stricter[reason] += 1
            continue
        if got == expected or (got[0] == expected[0] == "reject"):
            continue
        disagreements.append((category, token, expected, verdict, sorted(reasons)))

    print(f"\n{len(cases)} tokens: {dict(outcomes)}; stricter by design: {dict(stricter)}; "
          f"set aside (time boundary in the run): {ambiguous}; {time.monotonic() - started:.1f} s")
    assert not disagreements, f"{len(disagreements)} disagreements, by category " \
        f"{dict(Counter(d[0] for d in disagreements))}:\n" + "\n".join(
            f"[{category}] {token!r}\n    PyJWT oracle: {expected}\n    mcpgw: {verdict}  (stricter-by-design: {reasons})"
            for category, token, expected, verdict, reasons in disagreements[:15])
    assert ambiguous <= 20, ambiguous
    assert outcomes["accept"] > 200 and outcomes["reject"] > 500, outcomes
    assert stricter["base64url padding"] and stricter["duplicate JSON keys"] and stricter["crit header"], stricter
