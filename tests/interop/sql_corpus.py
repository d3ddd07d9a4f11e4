"""SQL-injection corpus for mcpgw's `sql_injection` detector and `read_only_sql` constraint.

Attack side: sqlmap's own payload catalogue (`data/xml/payloads/*.xml` and `data/xml/boundaries.xml` of the sqlmap
package installed in the venv). For every `<test>`, its `<request><payload>` and its `<vector>` (with `[INFERENCE]`
replaced by `1=1`) are composed with every `<boundary>`, as sqlmap's `Agent.prefixQuery`/`suffixQuery`/`payload`
compose them: the test's `<comment>` is appended; the boundary's suffix only when there is no comment; prefix and
suffix are left out when the test replaces the original value (`<where>3</where>`); `<where>2</where>` puts a
negative number in front instead of the original value `1`. Unlike sqlmap, every boundary is used for every test
(sqlmap would skip the ones whose `<clause>`/`<where>` do not fit), so the corpus is a superset of what sqlmap sends.
Every placeholder (`[RANDNUM]`, `[RANDSTR2]`, `[SLEEPTIME]`, `[DELIMITER_START]`, `[UNION]`, ...) is found with a
regular expression and given a concrete value from a random generator seeded per test, so the corpus is
deterministic; an unknown placeholder is an error. Values are deduplicated per technique (the payload file name).

Benign side: `corpus/benign_sql_values.txt` (argument values an agent sends to a tool that builds SQL from user
input) and `corpus/benign_select_queries.txt` (read-only queries), both hand-written.

`python tests/interop/sql_corpus.py --report` runs the whole corpus through `mcpgw policy evaluate` (and through
libinjection, when `import libinjection` works) and prints the measured numbers as markdown, so documentation can be
regenerated from them; `--misses` prints every payload mcpgw lets through and every benign input it refuses, as JSON
lines; without options the corpus itself is printed (one JSON record per line). `tests/interop/test_sql_corpus.py`
asserts on the same numbers.
"""
from __future__ import annotations

import glob
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
BENIGN_VALUES = CORPUS / "benign_sql_values.txt"
BENIGN_QUERIES = CORPUS / "benign_select_queries.txt"

SEED = 20261125
ORIGINAL_VALUE = "1"
SLEEP_TIME = "5"
INFERENCE = "1=1"
PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*\]")
TECHNIQUES = ["boolean_blind", "error_based", "inline_query", "stacked_queries", "time_blind", "union_query"]

# What sqlmap would extract through [QUERY]: the current user, in each DBMS's dialect (as in sqlmap's queries.xml).
QUERY_BY_DBMS = {
    "MySQL": "SELECT MID((IFNULL(CAST(CURRENT_USER() AS NCHAR),0x20)),1,51)",
    "PostgreSQL": "SELECT COALESCE(CAST(CURRENT_USER AS VARCHAR(10000))::text,(CHR(32)))",
    "Microsoft SQL Server": "SELECT ISNULL(CAST(SYSTEM_USER AS NVARCHAR(4000)),CHAR(32))",
    "Oracle": "SELECT NVL(CAST(USER AS VARCHAR(4000)),CHR(32)) FROM DUAL",
    "SQLite": "SELECT COALESCE(CAST(sqlite_version() AS TEXT),CHAR(32))",
}
DEFAULT_QUERY = "SELECT CURRENT_USER"


def sqlmap_xml_dir() -> pathlib.Path:
    """The installed sqlmap package's data/xml (SQLMAP_XML overrides)."""
    explicit = os.environ.get("SQLMAP_XML")
    if explicit:
        return pathlib.Path(explicit)
    candidates = sorted(glob.glob(str(ROOT / ".venv" / "lib" / "python3*" / "site-packages" / "sqlmap" / "data" / "xml")))
    if not candidates:
        try:
            import sqlmap  # type: ignore

            candidates = [str(pathlib.Path(sqlmap.__file__).parent / "data" / "xml")]
        except ImportError:
            pass
    if not candidates:
        raise FileNotFoundError("sqlmap's data/xml not found; install sqlmap in .venv or set SQLMAP_XML")
    return pathlib.Path(candidates[-1])


def mcpgw_binary() -> str:
    return os.environ.get("MCPGW_BIN") or str(ROOT / ".build" / "debug" / "mcpgw")


def _text(element, tag: str) -> str | None:
    found = element.find(tag)
    if found is None:
        return None
    return found.text or ""


def load_boundaries(xml_dir: pathlib.Path) -> list[dict]:
    boundaries = []
    for node in ET.parse(xml_dir / "boundaries.xml").getroot().findall("boundary"):
        boundaries.append({"prefix": _text(node, "prefix") or "", "suffix": _text(node, "suffix") or ""})
    return boundaries


def load_tests(xml_dir: pathlib.Path) -> list[dict]:
    tests = []
    for path in sorted((xml_dir / "payloads").glob("*.xml")):
        for index, node in enumerate(ET.parse(path).getroot().findall("test")):
            request = node.find("request")
            details = node.find("details")
            dbms = _text(details, "dbms") if details is not None else None
            where = (_text(node, "where") or "1").strip()
            tests.append({
                "technique": path.stem,
                "index": index,
                "title": (_text(node, "title") or "").strip(),
                "where": [int(w) for w in where.split(",") if w.strip()],
                "vector": _text(node, "vector"),
                "payload": _text(request, "payload") if request is not None else None,
                "comment": _text(request, "comment") if request is not None else None,
                "char": (_text(request, "char") if request is not None else None),
                "columns": (_text(request, "columns") if request is not None else None),
                "dbms": dbms,
            })
    return tests


class Placeholders:
    """Concrete values for sqlmap's placeholders, drawn from a generator seeded per test (deterministic)."""

    def __init__(self, test: dict):
        rng = random.Random(f"{SEED}:{test['technique']}:{test['index']}")
        self.rng = rng
        numbers: list[str] = []
        while len(numbers) < 6:
            candidate = str(rng.randint(1000, 9999))
            if candidate not in numbers:
                numbers.append(candidate)
        strings: list[str] = []
        letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        while len(strings) < 3:
            candidate = "".join(rng.choice(letters) for _ in range(4))
            if candidate not in strings:
                strings.append(candidate)

        def marker() -> str:  # sqlmap's kb.chars: 'q' + three low-frequency letters + 'q'
            return "q" + "".join(rng.choice("zxjkvbp") for _ in range(3)) + "q"

        start, stop = marker(), marker()
        char = test.get("char") or "NULL"
        self.values = {
            "[RANDNUM]": numbers[0], "[RANDNUM1]": numbers[1], "[RANDNUM2]": numbers[2], "[RANDNUM3]": numbers[3],
            "[RANDNUM4]": numbers[4], "[RANDNUM5]": numbers[5],
            "[RANDSTR]": strings[0], "[RANDSTR1]": strings[1], "[RANDSTR2]": strings[2],
            "[SLEEPTIME]": SLEEP_TIME, "[DELAYED]": SLEEP_TIME,
            "[DELIMITER_START]": start, "[DELIMITER_STOP]": stop,
            "[AT_REPLACE]": marker(), "[SPACE_REPLACE]": marker(), "[DOLLAR_REPLACE]": marker(), "[HASH_REPLACE]": marker(),
            "[GENERIC_SQL_COMMENT]": "-- [RANDSTR]",
            "[ORIGVALUE]": ORIGINAL_VALUE, "[ORIGINAL]": ORIGINAL_VALUE,
            "[INFERENCE]": INFERENCE,
            "[QUERY]": QUERY_BY_DBMS.get(test.get("dbms") or "", DEFAULT_QUERY),
            "[COLSTART]": "1", "[COLSTOP]": "10",
            # the custom UNION character (--union-char); a number, as sqlmap's own [RANDNUM] variant
            "[CHAR]": numbers[1],
        }
        # [UNION]: what sqlmap's forgeUnionQuery sends: UNION ALL SELECT with the test's filler in every column
        # but one, which carries the delimited result (MySQL form, as sqlmap's generic UNION tests start with).
        filler = self.substitute(char) if char else "NULL"
        columns = rng.randint(1, 10)
        position = rng.randrange(columns)
        hexed = lambda text: "0x" + text.encode().hex()  # noqa: E731
        carrier = f"CONCAT({hexed(start)},{hexed(strings[0])},{hexed(stop)})"
        self.values["[UNION]"] = "UNION ALL SELECT " + ",".join(carrier if i == position else filler for i in range(columns))

    def substitute(self, text: str) -> str:
        for _ in range(4):  # values can hold placeholders themselves ([GENERIC_SQL_COMMENT] → [RANDSTR])
            names = set(PLACEHOLDER.findall(text))
            if not names:
                return text
            for name in names:
                if name not in self.values:
                    raise KeyError(f"unknown sqlmap placeholder {name} in {text!r}")
                text = text.replace(name, self.values[name])
        raise ValueError(f"placeholders do not settle in {text!r}")


def compose(expression: str, comment: str | None, prefix: str, suffix: str, where: int, negative: str) -> str:
    """sqlmap's prefixQuery + suffixQuery + payload for one boundary (see the module docstring)."""
    if where == 3:
        query = ""
    else:
        query = prefix
        if not (expression.startswith(";")
                or (query and query[-1] in "()" and expression[:1] in ("(", ")"))
                or (query and query[-1] == "(")):
            query += " "
    value = query + expression + (comment or "")
    if where != 3 and suffix and not comment:
        if re.search(r"\w\Z", value) and re.search(r"\A\w", suffix):
            value += " "
        value += suffix
    value = re.sub(r";\W*;", ";", value)
    if where == 1:
        return ORIGINAL_VALUE + value
    if where == 2:
        return ("" if value.startswith("-") else "-" + negative) + value
    return value


def build_corpus(xml_dir: pathlib.Path | None = None) -> list[dict]:
    """Records {technique, title, value, template}; template is the test's payload or vector before boundaries."""
    xml_dir = xml_dir or sqlmap_xml_dir()
    boundaries = load_boundaries(xml_dir)
    seen: set[tuple[str, str]] = set()
    records: list[dict] = []
    for test in load_tests(xml_dir):
        holder = Placeholders(test)
        title = holder.substitute(test["title"])
        templates = []
        for template in (test["payload"], test["vector"]):
            if template is None:
                continue
            template = template.strip()
            if template and template not in templates:
                templates.append(template)
        if test["technique"] == "union_query" and "[UNION]" not in templates:
            templates.append("[UNION]")  # union tests send the forged UNION ALL SELECT (their <payload> is empty)
        for template in templates:
            for where in test["where"]:
                for boundary in boundaries:
                    raw = compose(template, test["comment"], boundary["prefix"], boundary["suffix"], where,
                                  holder.values["[RANDNUM5]"])
                    value = holder.substitute(raw)
                    key = (test["technique"], value)
                    if key in seen:
                        continue
                    seen.add(key)
                    records.append({"technique": test["technique"], "title": title, "value": value,
                                    "template": holder.substitute(template)})
    return records


def load_lines(path: pathlib.Path) -> list[str]:
    """Non-empty lines that do not start with '#'."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]


def is_stacked(record: dict) -> bool:
    """A stacked_queries payload whose template starts a second statement with ';'."""
    return record["technique"] == "stacked_queries" and record["template"].lstrip().startswith(";")


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

POLICY = {
    "name": "sql-corpus",
    "default_action": "deny",
    "rules": [
        {"id": "S", "action": "allow", "tools": ["q"], "args": {"v": {"detectors": ["sql_injection"]}}},
        {"id": "RO", "action": "allow", "tools": ["ro"], "args": {"sql": {"read_only_sql": True}}},
    ],
}


def wrap(value: str) -> str:
    return f"SELECT * FROM t WHERE id={value}"


def mcpgw_decisions(calls: list[tuple[str, str, str]]) -> list[dict]:
    """calls: (tool, argument name, value) → one decision object each, from one `mcpgw policy evaluate` process."""
    with tempfile.TemporaryDirectory() as directory:
        tenant = pathlib.Path(directory) / "t"
        tenant.mkdir()
        (tenant / "policy.json").write_text(json.dumps(POLICY))
        lines = "".join(json.dumps({"tenant": "t", "agent": "a", "tool": tool, "arguments": {name: value}}) + "\n"
                        for tool, name, value in calls)
        result = subprocess.run([mcpgw_binary(), "policy", "evaluate", "--policies", directory], input=lines,
                                capture_output=True, text=True, timeout=600, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"mcpgw policy evaluate exited {result.returncode}: {result.stderr}")
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    if len(decisions) != len(calls):
        raise RuntimeError(f"{len(calls)} calls, {len(decisions)} decisions")
    errors = [d for d in decisions if "error" in d]
    if errors:
        raise RuntimeError(f"mcpgw could not read {len(errors)} lines, first: {errors[0]}")
    return decisions


def problem(decision: dict) -> str:
    for match in decision.get("matches", []):
        for argument in match.get("arguments", []):
            if argument.get("problem"):
                return argument["problem"]
    return decision.get("reason", "")


def libinjection_detector():
    """is_sqli(text) → bool, or None (with the import error) when libinjection is not installed."""
    try:
        import libinjection  # type: ignore
    except ImportError as error:  # pragma: no cover - depends on the environment
        return None, str(error)

    def is_sqli(text: str) -> bool:
        return bool(libinjection.is_sql_injection(text)["is_sqli"])

    return is_sqli, None


def evaluate() -> dict:
    """Runs everything once; returns the records, the benign inputs and every verdict."""
    started = time.monotonic()
    records = build_corpus()
    values = load_lines(BENIGN_VALUES)
    queries = load_lines(BENIGN_QUERIES)
    calls = ([("q", "v", r["value"]) for r in records] + [("q", "v", v) for v in values]
             + [("ro", "sql", q) for q in queries] + [("ro", "sql", wrap(r["value"])) for r in records])
    decisions = mcpgw_decisions(calls)
    n, b, s = len(records), len(values), len(queries)
    attack = decisions[:n]
    benign = decisions[n:n + b]
    selects = decisions[n + b:n + b + s]
    wrapped = decisions[n + b + s:]
    is_sqli, libinjection_error = libinjection_detector()
    result = {
        "records": records,
        "benign_values": values,
        "benign_queries": queries,
        "mcpgw_detected": [d["decision"] == "deny" for d in attack],
        "mcpgw_problem": [problem(d) for d in attack],
        "mcpgw_benign_flagged": [d["decision"] == "deny" for d in benign],
        "mcpgw_benign_problem": [problem(d) for d in benign],
        "ro_benign_accepted": [d["decision"] == "allow" for d in selects],
        "ro_benign_problem": [problem(d) for d in selects],
        "ro_wrapped_rejected": [d["decision"] == "deny" for d in wrapped],
        "libinjection_error": libinjection_error,
        "libinjection_detected": None,
        "libinjection_benign_flagged": None,
    }
    if is_sqli is not None:
        result["libinjection_detected"] = [is_sqli(r["value"]) for r in records]
        result["libinjection_benign_flagged"] = [is_sqli(v) for v in values]
    result["seconds"] = time.monotonic() - started
    return result


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def summary(result: dict) -> dict:
    """Counts per technique and overall."""
    per = OrderedDict()
    records = result["records"]
    lib = result["libinjection_detected"]
    for technique in TECHNIQUES + sorted({r["technique"] for r in records} - set(TECHNIQUES)):
        idx = [i for i, r in enumerate(records) if r["technique"] == technique]
        if not idx:
            continue
        per[technique] = {
            "payloads": len(idx),
            "mcpgw": sum(result["mcpgw_detected"][i] for i in idx),
            "libinjection": None if lib is None else sum(lib[i] for i in idx),
            "ro_rejected": sum(result["ro_wrapped_rejected"][i] for i in idx),
        }
    total = len(records)
    stacked = [i for i, r in enumerate(records) if is_stacked(r)]
    return {
        "per_technique": per,
        "total": total,
        "mcpgw": sum(result["mcpgw_detected"]),
        "libinjection": None if lib is None else sum(lib),
        "stacked": len(stacked),
        "stacked_mcpgw": sum(result["mcpgw_detected"][i] for i in stacked),
        "stacked_libinjection": None if lib is None else sum(lib[i] for i in stacked),
        "stacked_ro_rejected": sum(result["ro_wrapped_rejected"][i] for i in stacked),
        "benign": len(result["benign_values"]),
        "benign_mcpgw": sum(result["mcpgw_benign_flagged"]),
        "benign_libinjection": (None if result["libinjection_benign_flagged"] is None
                                else sum(result["libinjection_benign_flagged"])),
        "queries": len(result["benign_queries"]),
        "queries_accepted": sum(result["ro_benign_accepted"]),
        "ro_rejected": sum(result["ro_wrapped_rejected"]),
    }


def report(result: dict) -> str:
    s = summary(result)
    lib_missing = s["libinjection"] is None
    lines = []
    sqlmap_version = "unknown"
    try:
        from importlib.metadata import version

        sqlmap_version = version("sqlmap")
    except Exception:  # pragma: no cover
        pass
    lines.append(f"Corpus: sqlmap {sqlmap_version} payloads × boundaries ({s['total']} distinct values), "
                 f"{s['benign']} hand-written benign values, {s['queries']} hand-written read-only queries. "
                 f"Regenerate with `python tests/interop/sql_corpus.py --report`.")
    if lib_missing:
        lines.append("")
        lines.append(f"libinjection not measured: `import libinjection` failed ({result['libinjection_error']}).")
    lines.append("")
    lines.append("### `sql_injection` detector")
    lines.append("")
    lines.append("| technique | payloads | mcpgw detected | libinjection detected |")
    lines.append("|---|---:|---:|---:|")
    for technique, row in s["per_technique"].items():
        lib = "n/a" if row["libinjection"] is None else percent(row["libinjection"], row["payloads"])
        lines.append(f"| {technique} | {row['payloads']} | {percent(row['mcpgw'], row['payloads'])} | {lib} |")
    lib = "n/a" if lib_missing else percent(s["libinjection"], s["total"])
    lines.append(f"| **all** | {s['total']} | {percent(s['mcpgw'], s['total'])} ({s['mcpgw']}) | "
                 f"{lib}{'' if lib_missing else ' (' + str(s['libinjection']) + ')'} |")
    lib = "n/a" if lib_missing else percent(s["stacked_libinjection"], s["stacked"])
    lines.append(f"| … stacked_queries whose payload starts a second statement with `;` | {s['stacked']} | "
                 f"{percent(s['stacked_mcpgw'], s['stacked'])} | {lib} |")
    lines.append("")
    lines.append("| benign values | count | mcpgw flagged | libinjection flagged |")
    lines.append("|---|---:|---:|---:|")
    lib_fp = "n/a" if s["benign_libinjection"] is None else str(s["benign_libinjection"])
    lines.append(f"| `corpus/benign_sql_values.txt` | {s['benign']} | {s['benign_mcpgw']} | {lib_fp} |")
    lines.append("")
    lines.append("### `read_only_sql` constraint")
    lines.append("")
    lines.append("| input | count | result |")
    lines.append("|---|---:|---|")
    lines.append(f"| benign read-only queries (`corpus/benign_select_queries.txt`) | {s['queries']} | "
                 f"{s['queries_accepted']} accepted ({percent(s['queries_accepted'], s['queries'])}) |")
    for technique, row in s["per_technique"].items():
        lines.append(f"| `SELECT * FROM t WHERE id=<{technique} value>` | {row['payloads']} | "
                     f"{row['ro_rejected']} rejected ({percent(row['ro_rejected'], row['payloads'])}) |")
    lines.append(f"| `SELECT * FROM t WHERE id=<any sqlmap value>` | {s['total']} | "
                 f"{s['ro_rejected']} rejected ({percent(s['ro_rejected'], s['total'])}) |")
    lines.append(f"| … of which stacked | {s['stacked']} | {s['stacked_ro_rejected']} rejected |")
    lines.append("")
    lines.append("A wrapped value that `read_only_sql` accepts is still a single read-only query "
                 "(e.g. `… WHERE id=1 AND 1234=1234`): the constraint bounds what a query can do, not what it reads.")
    return "\n".join(lines)


def misses(result: dict, limit: int | None = None) -> list[dict]:
    out = [r for r, d in zip(result["records"], result["mcpgw_detected"]) if not d]
    return out if limit is None else out[:limit]


def main(argv: list[str]) -> int:
    if "--report" in argv:
        result = evaluate()
        print(report(result))
        print(f"\n<!-- evaluated in {result['seconds']:.1f} s -->")
        return 0
    if "--misses" in argv:
        result = evaluate()
        for r, p in zip(result["records"], result["mcpgw_detected"]):
            if not p:
                print(json.dumps({"technique": r["technique"], "title": r["title"], "value": r["value"]}))
        for v, flagged, why in zip(result["benign_values"], result["mcpgw_benign_flagged"], result["mcpgw_benign_problem"]):
            if flagged:
                print(json.dumps({"benign_flagged": v, "problem": why}))
        for q, ok, why in zip(result["benign_queries"], result["ro_benign_accepted"], result["ro_benign_problem"]):
            if not ok:
                print(json.dumps({"benign_query_rejected": q, "problem": why}))
        return 0
    for record in build_corpus():
        print(json.dumps({"technique": record["technique"], "title": record["title"], "value": record["value"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
