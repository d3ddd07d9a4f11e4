#!/usr/bin/env python3
"""Driver for bench/policy-isolation.sh: does a tenant sending heavy adversarial calls delay another tenant's calls?

Subcommands (the shell script calls them in this order; each is usable on its own):

  config   writes the gateway configuration and the two bench tenants' policies into a work folder
           (tenant acme = "heavy": a rule with detectors on every argument value; tenant globex = "light": a plain
           allow; no _global documents), with the development PKI in certs-dev/ (mTLS for both tenants)
  run      one measurement against a running gateway: checks, then phase 1 (baseline: the light tenant alone,
           N sequential tools/call over one keep-alive HTTPS connection) and phase 2 (the same N while W worker
           processes of the heavy tenant send ~4 MiB adversarial tools/call bodies back to back); alongside both
           phases a light-tenant prober sends calls with never-seen bearer tokens (PyJWT); writes JSON
  report   reads the JSON of one or more runs (and the gateway's audit logs) and prints a markdown report

http.client over ssl with client certificates; PyJWT (the project's .venv) only for the fresh-token prober, which is
skipped without it. Linux only (/proc, sched_setaffinity). Loopback only; every socket has a timeout, every loop a
bound, and each light phase a deadline.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CERTS = ROOT / "certs-dev"
MAX_BODY = 4 * 1024 * 1024  # the gateway's default limits.max_body_bytes
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
HEAVY_TENANT, LIGHT_TENANT = "acme", "globex"
HEAVY_CERT, LIGHT_CERT = "acme/agents/bot1", "globex/agents/bot1"
LOAD_ID_BASE = 1_000_000  # light calls of phase 2 have JSON-RPC ids from here (phase 1: from 1)
HEAVY_ID_BASE = 10_000_000

HEAVY_POLICY = {
    "name": "bench-heavy",
    "description": "policy-isolation bench: every argument value and key canonicalised and run through three detectors",
    "default_action": "deny",
    "rules": [
        {"id": "H", "action": "allow", "tools": ["t"],
         "args": {"*": {"detectors": ["path_traversal", "sql_injection", "shell_metacharacters"],
                        "max_length": 100000000}}},
    ],
}
LIGHT_POLICY = {
    "name": "bench-light",
    "description": "policy-isolation bench: a plain allow, no argument constraints",
    "default_action": "deny",
    "rules": [{"id": "L", "action": "allow", "tools": ["t"]}],
}


# ------------------------------------------------------------------------------------------------ config
def cmd_config(args):
    work = pathlib.Path(args.work)
    policies = work / "policies"
    for tenant, policy in ((HEAVY_TENANT, HEAVY_POLICY), (LIGHT_TENANT, LIGHT_POLICY)):
        (policies / tenant).mkdir(parents=True, exist_ok=True)
        (policies / tenant / "bench.json").write_text(json.dumps(policy, indent=1) + "\n")
    config = json.loads((ROOT / "mcpgw.dev.json").read_text())
    config["listen"] = f"127.0.0.1:{args.port}"
    config["policies"] = str(policies)
    config["audit_log"] = args.audit_log
    config["limits"]["shutdown_grace_seconds"] = 2
    if args.event_loops:
        config["limits"]["event_loops"] = args.event_loops
    for tenant in config["tenants"].values():
        tenant["upstream"] = {"url": args.upstream}
    text = json.dumps(config, indent=1).replace('"certs-dev/', f'"{CERTS}/')
    (work / "mcpgw.json").write_text(text + "\n")
    print(work / "mcpgw.json")


# ------------------------------------------------------------------------------------------------ payloads
def envelope(call_id, arguments):
    return {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": "t", "arguments": arguments}}


def encode(message) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def fill(call_id, key, unit: str, tail: str = "") -> bytes:
    """A body whose argument `key` is `unit` repeated (then `tail`), as close to MAX_BODY as fits."""
    empty = len(encode(envelope(call_id, {key: tail})))
    unit_bytes = len(encode(unit)) - 2
    count = (MAX_BODY - empty) // unit_bytes
    body = encode(envelope(call_id, {key: unit * count + tail}))
    assert len(body) <= MAX_BODY, (key, len(body))
    return body


def heavy_bodies() -> list[tuple[str, str, bytes]]:
    """(kind, description, body) for each adversarial kind; every body is at most 4 MiB (the gateway's limit)."""
    kinds = []
    # 1. U+FDFA (ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM): NFKC turns one scalar into 18.
    kinds.append(("fdfa", "U+FDFA × ~1.4 M (NFKC ×18)", fill(HEAVY_ID_BASE, "s", "\ufdfa")))
    # 2. Percent-encoding 13 levels deep (%25 twelve times, then 2e), repeated: '.' after 13 rounds (limit 8).
    token = "%" + "25" * 12 + "2e"
    kinds.append(("pct", f"'{token}' repeated (13 decoding rounds)", fill(HEAVY_ID_BASE, "q", token)))
    # 3. 9,999 leaves of ~420 bytes (with the key "items": 10,000 values, the most the gateway examines): fullwidth
    #    letters (NFKC changes them), %-escapes, SQL-ish words that are not an attack, so every leaf is scanned.
    leaf_unit = "ｓｅｌｅｃｔ name from docs%20where id is 7 and ｔｙｐｅ%3Dpdf  "
    leaves = 9_999
    empty = len(encode(envelope(HEAVY_ID_BASE, {"items": [""] * leaves})))
    per_leaf = (MAX_BODY - empty) // leaves
    leaf = ""
    while len((leaf + leaf_unit).encode()) <= per_leaf:
        leaf += leaf_unit
    leaf += "x" * (per_leaf - len(leaf.encode()))
    body = encode(envelope(HEAVY_ID_BASE, {"items": [leaf] * leaves}))
    assert len(body) <= MAX_BODY
    kinds.append(("leaves", f"{leaves:,} leaves of {per_leaf} bytes", body))
    # 4. Strings holding JSON, which the gateway also checks as structures (each up to 64 KiB and depth 16): an
    #    array of ~64 such strings, each a JSON array of 4 objects 15 deep around a ~15 KiB leaf (~4,000 values in
    #    all, under the 10,000 limit); '../' in the very last leaf.
    def nested(leaf: str) -> str:
        inner = json.dumps(leaf)
        for depth in range(14):
            inner = '{"k%d":%s}' % (depth, inner)
        return inner
    doc_leaf = "docs/" + "abcdefgh/" * 1650
    one = "[" + ",".join([nested(doc_leaf)] * 4) + "]"
    assert len(one.encode()) < 64 * 1024
    last = "[" + ",".join([nested(doc_leaf)] * 3 + [nested("../etc/passwd")]) + "]"
    empty = len(encode(envelope(HEAVY_ID_BASE, {"docs": [last]})))
    count = (MAX_BODY - empty) // (len(encode(one)) - 1)
    body = encode(envelope(HEAVY_ID_BASE, {"docs": [one] * count + [last]}))
    assert len(body) <= MAX_BODY
    kinds.append(("json", f"{count + 1} strings each holding {len(one.encode()) // 1024} KiB of JSON "
                  "(4 objects 15 deep); '../' in the last", body))
    # 5. A long path of segments with combining marks inside the names, '../' and a slashed dot at the end.
    kinds.append(("path", "long path, combining marks in every segment, '../' at the end",
                  fill(HEAVY_ID_BASE, "path", "fo\u0301o\u0308ba\u0323r/", "../..\u0338/etc/passwd")))
    return kinds


def with_id(body: bytes, call_id: int) -> bytes:
    """The body with its JSON-RPC id replaced (every heavy body starts with the same id)."""
    old = f'"id":{HEAVY_ID_BASE},'.encode()
    new = f'"id":{call_id},'.encode()
    return body.replace(old, new, 1) if len(new) == len(old) else body


# ------------------------------------------------------------------------------------------------ HTTP
def context(agent: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(CERTS / "gateway-ca.pem"))
    ctx.load_cert_chain(str(CERTS / f"{agent}.pem"), str(CERTS / f"{agent}.key"))
    return ctx


def connect(port: int, ctx: ssl.SSLContext, timeout: float) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    conn.connect()
    return conn


def post(conn: http.client.HTTPSConnection, body: bytes) -> tuple[int, bytes, bool]:
    """(status, body, connection kept)."""
    conn.request("POST", "/mcp", body=body, headers=HEADERS)
    response = conn.getresponse()
    data = response.read()
    return response.status, data, not response.will_close


def answer_of(status: int, data: bytes) -> str:
    """A short label of the gateway's answer: status and the JSON-RPC error message, or 'result'."""
    try:
        message = json.loads(data)
    except ValueError:
        return f"{status} {data[:120]!r}"
    if isinstance(message, dict) and "error" in message:
        error = message["error"]
        return f"{status} {error.get('code')} {str(error.get('message'))[:160]}"
    if isinstance(message, dict) and "result" in message:
        return f"{status} result"
    return f"{status} {str(message)[:120]}"


def light_call(call_id: int) -> bytes:
    return encode(envelope(call_id, {"q": "hello", "n": call_id}))


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat: the machine as a whole, including work this PID namespace
    cannot see (other containers on the same VM)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_between(before, after) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def light_phase(port: int, n: int, first_id: int, deadline: float, warmup: int) -> dict:
    """N sequential calls on one keep-alive connection; latencies in microseconds."""
    ctx = context(LIGHT_CERT)
    conn = connect(port, ctx, timeout=10)
    for i in range(warmup):
        post(conn, light_call(first_id - warmup + i))
    latencies, bad, reconnects = [], {}, 0
    cpu_before = cpu_times()
    started = time.perf_counter()
    for i in range(n):
        if time.perf_counter() > deadline:
            break
        body = light_call(first_id + i)
        t0 = time.perf_counter_ns()
        try:
            status, data, kept = post(conn, body)
        except (OSError, http.client.HTTPException) as error:
            label = f"error {type(error).__name__}: {error}"
            bad[label] = bad.get(label, 0) + 1
            conn.close()
            conn = connect(port, ctx, timeout=10)
            reconnects += 1
            continue
        latencies.append((time.perf_counter_ns() - t0) // 1000)
        if status != 200 or b'"result"' not in data:
            label = answer_of(status, data)
            bad[label] = bad.get(label, 0) + 1
        if not kept:
            conn.close()
            conn = connect(port, ctx, timeout=10)
            reconnects += 1
    elapsed = time.perf_counter() - started
    busy = busy_between(cpu_before, cpu_times())
    conn.close()
    return {"latencies_us": latencies, "not_served": bad, "reconnects": reconnects, "seconds": elapsed,
            "requested": n, "machine_busy": busy}


def heavy_worker(port: int, index: int, kinds, stop, events, cpus):
    """Sends the adversarial bodies in rotation until `stop` is set. Puts ("start", index, kind, t) before each call
    and ("done", index, record) after it on `events`, so that a call still in flight when the phase ends (a heavy
    call can take longer than the phase) is reported as such; the parent then ends the process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctx = context(HEAVY_CERT)
    conn = None
    call = 0
    while not stop.is_set() and call < 100_000:
        kind, _, body = kinds[(index + call) % len(kinds)]
        call_id = HEAVY_ID_BASE + index * 100_000 + call
        call += 1
        payload = with_id(body, call_id)
        started = time.time()
        events.put(("start", index, kind, started))
        t0 = time.perf_counter_ns()
        try:
            if conn is None:
                conn = connect(port, ctx, timeout=120)
            status, data, kept = post(conn, payload)
            label = answer_of(status, data)
        except (OSError, http.client.HTTPException) as error:
            status, label, kept = 0, f"error {type(error).__name__}: {error}"[:200], False
        events.put(("done", index, {"kind": kind, "latency_us": (time.perf_counter_ns() - t0) // 1000,
                                    "status": status, "answer": label, "start": started}))
        if not kept and conn is not None:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def collect(events, heavy: list, in_flight: dict) -> None:
    """Moves what the heavy workers reported so far into `heavy` (completed calls) and `in_flight`."""
    while True:
        try:
            event = events.get_nowait()
        except Exception:
            return
        if event[0] == "start":
            in_flight[event[1]] = {"kind": event[2], "start": event[3]}
        else:
            in_flight.pop(event[1], None)
            heavy.append(event[2])


TOKEN_ID_BASE = 20_000_000


def token_prober(port: int, stop, events, cpus, gap: float, timeout: float):
    """Light-tenant calls that each carry a bearer token the gateway has not seen (RS256, signed with the development
    key in certs-dev/jwt): their signature check is offloaded to the same blocking pool as the large decisions.
    One call at a time, `gap` seconds apart, until `stop`; ("tstart", t) before and ("tdone", record) after each."""
    import jwt  # PyJWT (the project's .venv); the caller checks it is there

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    key = (CERTS / "jwt" / f"{LIGHT_TENANT}-rs256.key").read_text()
    ctx = ssl.create_default_context(cafile=str(CERTS / "gateway-ca.pem"))  # no client certificate
    conn = None
    call = 0
    while not stop.is_set() and call < 10_000:
        now = int(time.time())
        token = jwt.encode({"iss": f"https://issuer.mcpgw.dev/{LIGHT_TENANT}", "aud": "mcpgw", "sub": "bot1",
                            "tenant": LIGHT_TENANT, "iat": now, "exp": now + 600, "jti": f"{os.getpid()}-{call}"},
                           key, algorithm="RS256", headers={"kid": f"{LIGHT_TENANT}-rs256"})
        body = light_call(TOKEN_ID_BASE + call)
        call += 1
        started = time.time()
        events.put(("tstart", started))
        t0 = time.perf_counter_ns()
        try:
            if conn is None:
                conn = connect(port, ctx, timeout=timeout)
            conn.request("POST", "/mcp", body=body, headers={**HEADERS, "Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            data = response.read()
            label, kept = answer_of(response.status, data), not response.will_close
        except (OSError, http.client.HTTPException) as error:
            label, kept = f"error {type(error).__name__}: {error}"[:200], False
        events.put(("tdone", {"latency_us": (time.perf_counter_ns() - t0) // 1000, "answer": label, "start": started}))
        if not kept and conn is not None:
            conn.close()
            conn = None
        stop.wait(gap)
    if conn is not None:
        conn.close()


def token_probe(port: int, cpus, gap: float, timeout: float):
    """Starts the prober; returns a function that stops it and returns {"calls": [...], "pending_s": [...]}."""
    ctx = multiprocessing.get_context("fork")
    stop, events = ctx.Event(), ctx.Queue()
    process = ctx.Process(target=token_prober, args=(port, stop, events, cpus, gap, timeout), daemon=True)
    process.start()

    def finish(grace: float) -> dict:
        stop.set()
        calls, pending = [], None
        end = time.time() + grace
        while True:
            try:
                event = events.get(timeout=0.05)
            except Exception:
                event = None
            if event is not None:
                if event[0] == "tstart":
                    pending = event[1]
                else:
                    pending = None
                    calls.append(event[1])
                continue
            if not process.is_alive() or time.time() > end:
                break
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)
        return {"calls": calls, "pending_s": [round(time.time() - pending, 1)] if pending else []}

    return finish


def thread_cpu(pid: int) -> dict:
    """Per thread name of a process: [CPU seconds, seconds waiting on a run queue, timeslices], from
    /proc/PID/task/TID/schedstat (threads of one name summed)."""
    per_name = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, slices = (int(x) for x in f.read().split()[:3])
        except (OSError, ValueError):
            continue
        total = per_name.setdefault(name, [0.0, 0.0, 0])
        total[0] += run_ns / 1e9
        total[1] += wait_ns / 1e9
        total[2] += slices
    return per_name


def idle_pool_threads(pid: int) -> list[str]:
    """Puts the gateway's NIO blocking-pool threads (where large decisions run) under SCHED_IDLE, so that they run
    only when no event loop wants the CPU. A diagnostic: it shows whether the light tenant waits for CPU time taken by
    the offloaded decisions. Returns the thread ids changed."""
    changed = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            if name.startswith("SGLTN-TP-"):
                os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
                changed.append(f"{tid}:{name}")
        except OSError:
            continue
    return changed


def cmd_run(args):
    cpus = {int(c) for c in args.client_cpus.split(",")} if args.client_cpus else None
    if cpus:
        os.sched_setaffinity(0, cpus)
    kinds = heavy_bodies()
    result = {"label": args.label, "requests": args.requests, "heavy_workers": args.heavy_workers,
              "client_cpus": args.client_cpus, "gateway_cpus": args.gateway_cpus, "gateway_pid": args.gateway_pid,
              "kinds": [{"kind": k, "description": d, "bytes": len(b)} for k, d, b in kinds]}

    # Checks: the light call is served; a small heavy-tenant call is allowed and one with '../' is denied by H.
    checks = {}
    conn = connect(args.port, context(LIGHT_CERT), timeout=10)
    checks["light allowed call"] = answer_of(*post(conn, light_call(1))[:2])
    conn.close()
    conn = connect(args.port, context(HEAVY_CERT), timeout=10)
    checks["heavy small allowed call"] = answer_of(*post(conn, encode(envelope(2, {"q": "docs/a.txt"})))[:2])
    checks["heavy small '../' call"] = answer_of(*post(conn, encode(envelope(3, {"q": "../etc/passwd"})))[:2])
    conn.close()
    result["checks"] = checks
    ok = (checks["light allowed call"] == "200 result" and checks["heavy small allowed call"] == "200 result"
          and "rule H" in checks["heavy small '../' call"])
    if not ok:
        print(json.dumps(checks, indent=1), file=sys.stderr)
        sys.exit("checks failed: the gateway does not answer as the bench policies say")

    probe_tokens = args.token_gap > 0
    if probe_tokens:
        try:
            import jwt  # noqa: F401
        except ImportError:
            print("PyJWT is missing: no fresh-token calls (use the project's .venv)", file=sys.stderr)
            probe_tokens = False

    # Phase 1: baseline.
    finish = token_probe(args.port, cpus, args.token_gap, args.token_timeout) if probe_tokens else None
    result["baseline"] = light_phase(args.port, args.requests, 1, time.perf_counter() + args.max_seconds,
                                     warmup=args.warmup)
    if finish:
        result["baseline"]["fresh_tokens"] = finish(grace=1.0)

    # Phase 2: under load.
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    events = ctx.Queue()
    workers = [ctx.Process(target=heavy_worker, args=(args.port, i, kinds, stop, events, cpus), daemon=True)
               for i in range(args.heavy_workers)]
    cpu_before = thread_cpu(args.gateway_pid) if args.gateway_pid else {}
    load_started = time.time()
    for worker in workers:
        worker.start()
    time.sleep(args.ramp_seconds)  # the heavy calls are in flight before the first light call
    if args.idle_pool:
        # The pool's threads exist once the first large decision was offloaded (during the ramp).
        result["idle_pool_threads"] = idle_pool_threads(args.gateway_pid)
        if not result["idle_pool_threads"]:
            print("warning: no SGLTN-TP-* threads in the gateway to put under SCHED_IDLE", file=sys.stderr)
    perf = None
    if args.perf_pid and args.perf_out:
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-g", "-p", str(args.perf_pid),
                                 "-o", args.perf_out, "--", "sleep", str(args.perf_seconds)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finish = token_probe(args.port, cpus, args.token_gap, args.token_timeout) if probe_tokens else None
    light_started = time.time()
    result["under_load"] = light_phase(args.port, args.requests, LOAD_ID_BASE, time.perf_counter() + args.max_seconds,
                                       warmup=args.warmup)
    light_ended = time.time()
    if perf is not None:
        # The light phase may be shorter than the recording; keep the load on until perf is done.
        while perf.poll() is None and time.time() - light_started < args.perf_seconds + 5:
            time.sleep(0.1)
        if perf.poll() is None:
            perf.terminate()
        _, err = perf.communicate(timeout=30)
        result["perf"] = {"file": args.perf_out, "status": perf.returncode, "stderr": err.decode(errors="replace")[-400:]}
    if finish:
        result["under_load"]["fresh_tokens"] = finish(grace=args.stop_grace)
    # Stop: no new heavy calls; calls that finish within the grace period are counted, the rest are reported as
    # still in flight and their workers ended (closing their connections).
    stop.set()
    load_ended = time.time()
    cpu_after = thread_cpu(args.gateway_pid) if args.gateway_pid else {}
    heavy, in_flight = [], {}
    grace_end = time.time() + args.stop_grace
    while time.time() < grace_end:
        collect(events, heavy, in_flight)
        if all(not w.is_alive() for w in workers):
            break
        time.sleep(0.05)
    ended = time.time()
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
    collect(events, heavy, in_flight)
    result["heavy_in_flight_at_stop"] = [{"kind": f["kind"], "seconds": round(ended - f["start"], 1)}
                                         for f in in_flight.values()]
    result["heavy"] = heavy
    result["load_window"] = {"load_started": load_started, "light_started": light_started,
                             "light_ended": light_ended, "load_ended": load_ended}
    result["gateway_threads"] = {
        # (threads of a name that ended during the phase make a delta negative: shown as 0)
        name: [max(0.0, round(after[0] - cpu_before.get(name, [0, 0, 0])[0], 3)),
               max(0.0, round(after[1] - cpu_before.get(name, [0, 0, 0])[1], 3)),
               max(0, after[2] - cpu_before.get(name, [0, 0, 0])[2])]
        for name, after in sorted(cpu_after.items())}
    # Heavy calls that overlapped the light phase (started before it ended).
    result["heavy_during_light"] = sum(1 for h in heavy if h["start"] < light_ended)
    pathlib.Path(args.out).write_text(json.dumps(result))
    b, u = result["baseline"], result["under_load"]
    print(f"{args.label}: baseline {len(b['latencies_us'])} calls p99 {pct(b['latencies_us'], 99) / 1000:.2f} ms; "
          f"under load {len(u['latencies_us'])} calls p99 {pct(u['latencies_us'], 99) / 1000:.2f} ms; "
          f"{len(heavy)} heavy calls", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ report
def pct(values, p):
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def ms(us) -> str:
    return f"{us / 1000:.2f}"


def audit_latencies(path: str) -> dict:
    """Light-tenant latency_ms (head received → upstream response head) per phase, from the audit log, in µs."""
    phases = {"baseline": [], "under_load": []}
    heavy_answers = {}
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        call_id = record.get("jsonrpc_id")
        if not isinstance(call_id, int) or "latency_ms" not in record:
            continue
        if record.get("tenant") == LIGHT_TENANT and record.get("decision") == "allow" and call_id < HEAVY_ID_BASE:
            phase = "under_load" if LOAD_ID_BASE <= call_id < HEAVY_ID_BASE else "baseline"
            phases[phase].append(int(round(record["latency_ms"] * 1000)))
        elif record.get("tenant") == HEAVY_TENANT and call_id >= HEAVY_ID_BASE:
            heavy_answers.setdefault(record.get("decision"), []).append(int(round(record["latency_ms"] * 1000)))
    return {"light": phases, "heavy": heavy_answers}


def cmd_report(args):
    runs = [json.loads(pathlib.Path(p).read_text()) for p in args.results]
    audits = [audit_latencies(p) for p in (args.audit or [])] + [{}] * len(runs)
    out = []
    first = runs[0]
    out.append("Adversarial kinds (each heavy worker rotates through them, starting at a different one):")
    out.append("")
    out.append("| kind | body | what |")
    out.append("|---|---:|---|")
    for k in first["kinds"]:
        out.append(f"| `{k['kind']}` | {k['bytes']:,} B | {k['description']} |")
    out.append("")
    out.append(f"Light tenant `{LIGHT_TENANT}` (plain allow): sequential `tools/call` on one keep-alive mTLS connection, "
               "latency measured by the client (request written → response read). "
               f"Heavy tenant `{HEAVY_TENANT}` (rule H: detectors on `*`).")
    out.append("")
    out.append("| setup | phase | calls | seconds | p50 ms | p90 ms | p99 ms | max ms | mean ms | not served | machine CPU busy |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        for phase in ("baseline", "under_load"):
            lat = run[phase]["latencies_us"]
            mean = sum(lat) / len(lat) if lat else 0
            label = "baseline" if phase == "baseline" else f"under load ({run['heavy_workers']} heavy workers)"
            busy = run[phase].get("machine_busy")
            out.append(f"| {run['label']} | {label} | {len(lat):,} | {run[phase]['seconds']:.1f} | {ms(pct(lat, 50))} | "
                       f"{ms(pct(lat, 90))} | {ms(pct(lat, 99))} | {ms(max(lat) if lat else 0)} | {ms(mean)} | "
                       f"{sum(run[phase]['not_served'].values())} | {'' if busy is None else f'{busy:.0%}'} |")
    out.append("")
    out.append("(machine CPU busy: all CPUs, from /proc/stat, including work outside this PID namespace; the light "
               "phase alone keeps a 2-CPU machine about half busy (one request in flight at a time), so a baseline far above that shared the machine with other work.)")
    out.append("")
    out.append("| setup | p50 ratio (load / baseline) | p99 ratio | max ratio | gateway-side p50 / p99 ratio (audit `latency_ms`) |")
    out.append("|---|---:|---:|---:|---:|")
    for run, audit in zip(runs, audits):
        b, u = run["baseline"]["latencies_us"], run["under_load"]["latencies_us"]
        r = lambda f: f"{f(u) / f(b):.2f}×" if b and f(b) else "n/a"
        side = "n/a"
        if audit and audit.get("light", {}).get("baseline") and audit["light"]["under_load"]:
            ab, au = audit["light"]["baseline"], audit["light"]["under_load"]
            side = (f"{pct(au, 50) / max(1, pct(ab, 50)):.2f}× / {pct(au, 99) / max(1, pct(ab, 99)):.2f}× "
                    f"({ms(pct(ab, 50))}→{ms(pct(au, 50))} ms, {ms(pct(ab, 99))}→{ms(pct(au, 99))} ms)")
        out.append(f"| {run['label']} | {r(lambda v: pct(v, 50))} | {r(lambda v: pct(v, 99))} | {r(max)} | {side} |")
    out.append("")
    if any("fresh_tokens" in run["baseline"] for run in runs):
        out.append("Alongside each phase, one more light-tenant client without a certificate sends one call at a time "
                   "(0.2 s apart), each with a bearer token the gateway has not seen before (RS256): its signature "
                   "check runs on the same blocking pool as the large decisions.")
        out.append("")
        out.append("| setup | phase | calls | p50 ms | p99 ms | max ms | still waiting at the end | answers |")
        out.append("|---|---|---:|---:|---:|---:|---:|---|")
        for run in runs:
            for phase in ("baseline", "under_load"):
                probe = run[phase].get("fresh_tokens")
                if not probe:
                    continue
                lat = [c["latency_us"] for c in probe["calls"]]
                answers = {}
                for c in probe["calls"]:
                    answers[c["answer"]] = answers.get(c["answer"], 0) + 1
                text = ", ".join(f"{n}× `{a}`" for a, n in sorted(answers.items(), key=lambda x: -x[1]))
                pending = ", ".join(f"{x:.1f} s" for x in probe["pending_s"]) or "–"
                out.append(f"| {run['label']} | {phase.replace('_', ' ')} | {len(lat)} | {ms(pct(lat, 50))} | "
                           f"{ms(pct(lat, 99))} | {ms(max(lat) if lat else 0)} | {pending} | {text} |")
        out.append("")
    out.append("Heavy calls (client-measured: 4 MiB written → answer read), and what the gateway answered:")
    out.append("")
    out.append("| setup | kind | calls | p50 ms | max ms | answers |")
    out.append("|---|---|---:|---:|---:|---|")
    for run in runs:
        by_kind = {}
        for h in run["heavy"]:
            by_kind.setdefault(h["kind"], []).append(h)
        for kind in [k["kind"] for k in run["kinds"]]:
            calls = by_kind.get(kind, [])
            lat = [h["latency_us"] for h in calls]
            answers = {}
            for h in calls:
                answers[h["answer"]] = answers.get(h["answer"], 0) + 1
            text = "<br>".join(f"{n}× `{a.replace('|', '/')}`" for a, n in sorted(answers.items(), key=lambda x: -x[1]))
            pending = [f["seconds"] for f in run.get("heavy_in_flight_at_stop", []) if f["kind"] == kind]
            if pending:
                text += ("<br>" if text else "") + f"{len(pending)}× still in flight at the end, after " + \
                        ", ".join(f"{x:.1f} s" for x in sorted(pending, reverse=True))
            out.append(f"| {run['label']} | `{kind}` | {len(calls)} | {ms(pct(lat, 50))} | {ms(max(lat) if lat else 0)} | {text} |")
        all_lat = [h["latency_us"] for h in run["heavy"]]
        seconds = run["load_window"]["load_ended"] - run["load_window"]["load_started"]
        pending = run.get("heavy_in_flight_at_stop", [])
        out.append(f"| {run['label']} | all | {len(all_lat)} done + {len(pending)} in flight at the end "
                   f"({len(all_lat) / seconds:.2f}/s over {seconds:.1f} s; "
                   f"{run['heavy_during_light']} before the light phase ended) | {ms(pct(all_lat, 50))} | "
                   f"{ms(max(all_lat) if all_lat else 0)} | |")
    out.append("")
    out.append("Gateway threads during phase 2 (from /proc/PID/task/*/schedstat): CPU seconds, seconds spent runnable "
               "but waiting for a CPU, and the mean wait per timeslice:")
    out.append("")
    out.append("| setup | thread | CPU s | run-queue wait s | timeslices | mean wait per slice |")
    out.append("|---|---|---:|---:|---:|---:|")
    for run in runs:
        threads = run.get("gateway_threads", {})
        seconds = run["load_window"]["load_ended"] - run["load_window"]["load_started"]
        for name, (cpu, wait, slices) in sorted(threads.items(), key=lambda x: -x[1][0]):
            if cpu < 0.01 and wait < 0.01:
                continue
            mean = f"{wait / slices * 1000:.3f} ms" if slices else "n/a"
            out.append(f"| {run['label']} ({seconds:.1f} s; gateway on CPUs {run['gateway_cpus'] or 'all'}, clients on "
                       f"{run['client_cpus'] or 'any'}) | `{name}` | {cpu:.2f} | {wait:.2f} | {slices:,} | {mean} |")
    out.append("")
    for run in runs:
        if "idle_pool_threads" in run:
            out.append(f"- {run['label']}: after the ramp, SCHED_IDLE on the gateway's blocking-pool threads "
                       f"{', '.join(run['idle_pool_threads']) or '(none found)'} (diagnostic, not a deployment setting)")
    for run in runs:
        for phase in ("baseline", "under_load"):
            if run[phase]["not_served"]:
                out.append(f"- {run['label']} {phase}: light calls not served: {run[phase]['not_served']}")
    print("\n".join(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("config")
    c.add_argument("--work", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--upstream", required=True)
    c.add_argument("--audit-log", required=True)
    c.add_argument("--event-loops", type=int)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--requests", type=int, default=6000)
    r.add_argument("--warmup", type=int, default=100)
    r.add_argument("--heavy-workers", type=int, default=3)
    r.add_argument("--max-seconds", type=float, default=20.0, help="deadline of each light phase")
    r.add_argument("--ramp-seconds", type=float, default=2.0)
    r.add_argument("--client-cpus", default="")
    r.add_argument("--gateway-cpus", default="")
    r.add_argument("--gateway-pid", type=int)
    r.add_argument("--token-gap", type=float, default=0.2,
                   help="seconds between the fresh-token calls that run alongside each phase (0: none)")
    r.add_argument("--token-timeout", type=float, default=60.0)
    r.add_argument("--idle-pool", action="store_true",
                   help="diagnostic: put the gateway's blocking-pool threads under SCHED_IDLE after the ramp")
    r.add_argument("--perf-pid", type=int)
    r.add_argument("--perf-out")
    r.add_argument("--perf-seconds", type=float, default=5.0)
    r.add_argument("--stop-grace", type=float, default=1.0, help="seconds heavy calls in flight at the end may finish")
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+")
    p.add_argument("--audit", nargs="*")
    args = parser.parse_args()
    {"config": cmd_config, "run": cmd_run, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
