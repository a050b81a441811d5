"""make bench: throughput and latency of schoolproxy against what a school would otherwise run.

On loopback, against a stand-in upstream filter that is also every origin (tests/internet.py), the
proxies measured in alternating rounds so drift on the machine hits them all alike:

  mitmdump       mitmdump -q in upstream mode with no script (the baseline a user would otherwise run)
  core           schoolproxy's lean mitmproxy core with none of its policy addons (the limit)
  full           schoolproxy run: 3M synthetic list entries, proxy auth, policy, SafeSearch, metrics,
                 every request recorded to SQLite
  full-nolog     the same with records off — the difference is what logging every request costs
  full-2w        the full stack as `schoolproxy run --workers 2` (two processes on one port)

Each round measures, per proxy:

- plain HTTP: wrk, 16 keep-alive connections, a mix of allowed, blocked and search requests from
  several signed-in pupils, each naming its host in Host as a browser behind an explicit proxy does
  (after two seconds of the same to warm up: sign-ins, caches), with the CPU time a request of the
  proxy and its children (steadier than req/s on a shared machine);
- latency: the same over one connection, one request at a time (no queueing);
- HTTPS as pupils' browsers use it (mitmdump, core and full): 16 curl processes at a time, each a
  browser session visiting several sites in turn with a few requests each over a new tunnel and TLS
  connection, half offering HTTP/2 and half HTTP/1.1; many hostnames, a blocked site, a search, and a
  site every profile passes through undecrypted (mitmdump and the core are told to ignore it too).
  Upstream connections are counted at the stand-in.

- real-time content (full stack only, see content_bench): a mix of allowed pages of realistic sizes
  (HTML, JSON, plain text, a streamed AI-chat reply) for signed-in pupils, with content scoring on and
  off, in alternating rounds.

BENCH_ROUNDS, BENCH_SECONDS and BENCH_ENTRIES size the run; BENCH_ONLY=plain, https or content runs one
part. The last line is machine-readable.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import hash_pw  # noqa: E402
from internet import Internet  # noqa: E402

DURATION = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CONNECTIONS = 16
LIST_ENTRIES = int(os.environ.get("BENCH_ENTRIES", "3000000"))
USERS = [f"pupil{i}" for i in range(8)]
NAMES = ("mitmdump", "core", "full", "full-nolog", "full-2w")
HTTPS_NAMES = ("mitmdump", "core", "full")
ONLY = os.environ.get("BENCH_ONLY", "")
PASSWORD = "bench-pass"
# HTTPS: a visit is a few requests to one site over one new tunnel and TLS connection (a browser opening
# a page); a session (one curl process) visits several sites in turn; SESSIONS of them run at once.
VISIT_REQUESTS = 4
SESSION_VISITS = 8
SESSIONS = 16
SITES = 60  # distinct allowed hostnames, visited in turn
PASSTHROUGH_RE = r"pinned\.test"  # mitmdump --ignore-hosts for the sites schoolproxy passes through

WRK_SCRIPT = """
local paths = {
  "http://learning.test/lesson",          -- allowed: education
  "http://socialsite.test/feed",          -- blocked: social networking
  "http://www.google.com/search?q=volcanoes+for+kids",  -- search: SafeSearch enforced
  "http://example.org/page?id=42",        -- allowed: default
}
-- A browser behind an explicit proxy names the URL's host in Host too (wrk would send the proxy's).
local hosts = { "learning.test", "socialsite.test", "www.google.com", "example.org" }
local auths = { %s }
local i = 0
request = function()
  i = i + 1
  local k = (i %% #paths) + 1
  local headers = { ["Host"] = hosts[k], ["Proxy-Authorization"] = auths[(i %% #auths) + 1] }
  return wrk.format("GET", paths[k], headers)
end
"""

CONFIG = """
school: Bench Primary
proxy: {{listen_host: 127.0.0.1, listen_port: {port}, upstream: "{upstream}", ca_dir: ca-{name},
         upstream_ca: "{upstream_ca}"}}
lists: {{sources: [lists, big], metadata: lists/categories.yaml, cache_dir: cache}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
records: {{enabled: {records}, database: "sqlite:///records.db", spool_dir: spool}}
identity:
  proxy_auth: {{users_file: users.htpasswd}}
  groups: {{year4: {{profile: pupil, members: [{members}]}}}}
  default_profile: pupil
profiles:
  pupil:
    role: pupil
    block_categories: [adult, social-networking, games]
    allow_categories: [education]
    tls: {{passthrough_sites: [pinned.test]}}
alerts: {{phrases: "{phrases}"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lists(root: Path) -> None:
    (root / "lists" / "social-networking").mkdir(parents=True)
    (root / "lists" / "social-networking" / "domains").write_text("socialsite.test\n")
    (root / "lists" / "education").mkdir()
    (root / "lists" / "education" / "domains").write_text("learning.test\n")
    (root / "lists" / "categories.yaml").write_text(
        "adult: {child_restricted: true}\nsocial-networking: {}\neducation: {}\ngames: {}\n")
    import random
    rnd = random.Random(1)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    tlds = ["com", "net", "org", "co.uk", "de", "info", "xyz"]
    for cat, n in (("adult", LIST_ENTRIES * 29 // 30), ("games", LIST_ENTRIES // 30)):
        d = root / "big" / cat
        d.mkdir(parents=True)
        with open(d / "domains", "w") as f:
            for _ in range(n):
                f.write("".join(rnd.choices(alphabet, k=rnd.randint(6, 14))) + "." + rnd.choice(tlds) + "\n")


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("proxy did not start")


def wait_idle(pid: int, timeout: float = 60) -> None:
    """Until a proxy and its children have finished starting (imports, the alert process's phrase lists,
    the record writer's database): under 10 % of a CPU over half a second. Start-up is not what a school's
    gateway spends its days on, and on a loaded machine it spilled into the measured seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = tree_cpu_s(pid)
        time.sleep(0.5)
        if tree_cpu_s(pid) - before < 0.05:
            return


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def tree(pid: int) -> list[int]:
    """A process and all its descendants (workers, record writer processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants; pages they share, such as the memory-mapped lists, are
    counted in each."""
    return sum(rss_mb(p) for p in tree(pid))


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(port: int, script: Path, connections: int = CONNECTIONS, seconds: int = DURATION) -> dict:
    out = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": requests, "p50": lat["50"], "p99": lat["99"], "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def classify_us(root: Path) -> tuple[float, float, float]:
    """Compile time of the 3M-entry lists, time to open them compiled, and classification µs per lookup
    (half listed subdomains, half unlisted hosts), in this process as the proxy does it."""
    from schoolproxy.filtering.listcache import load_compiled
    from schoolproxy.filtering.lists import load_metadata
    sources, md = [root / "lists", root / "big"], root / "lists" / "categories.yaml"
    info = load_metadata(md)
    t = time.perf_counter()
    load_compiled(sources, md, info, root / "cache")
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    lists = load_compiled(sources, md, info, root / "cache")
    load_s = time.perf_counter() - t
    listed = [line for _, line in zip(range(500), open(root / "big" / "adult" / "domains"))]
    hosts = [f"www.{h.strip()}" for h in listed] + [f"www.site{i}.example.co.uk" for i in range(500)]
    n = 200
    t = time.perf_counter()
    for _ in range(n):
        for h in hosts:
            lists.classify(h, "/")
    return (time.perf_counter() - t) / (n * len(hosts)) * 1e6, load_s, compile_s


def https_sessions() -> list[list[str]]:
    """The URLs of each browser session, in turn: mostly allowed sites (many hostnames), a blocked site,
    a search (SafeSearch rewritten) and a site passed through undecrypted, VISIT_REQUESTS requests each."""
    visits = []
    for i in range(SITES):
        visits.append([f"https://site{i}.test/page{j}" for j in range(VISIT_REQUESTS)])
        if i % 6 == 1:
            visits.append([f"https://socialsite.test/feed{j}" for j in range(VISIT_REQUESTS)])
        elif i % 6 == 3:
            visits.append([f"https://www.google.com/search?q=volcanoes+{j}" for j in range(VISIT_REQUESTS)])
        elif i % 6 == 5:
            visits.append([f"https://a{i % 3}.pinned.test/update{j}" for j in range(VISIT_REQUESTS)])
    return [sum(visits[k:k + SESSION_VISITS], []) for k in range(0, len(visits), SESSION_VISITS)]


def https_load(port: int, pid: int, cafile: Path, seconds: float, origin: Internet, auth: str = "") -> dict:
    """Browser sessions through the proxy for ``seconds``: requests/s, upstream connections and the
    proxy's CPU time (its processes, record writer included) per request."""
    sessions = https_sessions()
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0, "sessions": 0}
    deadline = time.monotonic() + seconds

    def browse(worker: int) -> None:
        k = worker
        while time.monotonic() < deadline:
            urls = sessions[k % len(sessions)]
            k += SESSIONS
            protocol = "--http2" if k % 2 else "--http1.1"
            args = [a for url in urls for a in ("-o", "/dev/null", url)]
            out = subprocess.run(["curl", "-s", protocol, "--cacert", str(cafile), "-x", f"http://{auth}127.0.0.1:{port}",
                                  "-w", "%{http_code}\n", *args], capture_output=True, text=True).stdout.split()
            with lock:
                counts["requests"] += sum(code != "000" for code in out)
                counts["errors"] += sum(code == "000" for code in out) + len(urls) - len(out)
                counts["sessions"] += 1

    origin.clear()
    cpu = tree_cpu_s(pid)
    started = time.monotonic()
    threads = [threading.Thread(target=browse, args=(i,)) for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    n = max(1, counts["requests"])
    return {"rps": counts["requests"] / elapsed, "requests": counts["requests"], "errors": counts["errors"],
            "upstream_per_request": origin.connections / n, "cpu_ms": (tree_cpu_s(pid) - cpu) * 1000 / n}


def ca_bundle(root: Path, name: str, ca_dir: Path, origin: Internet) -> Path:
    """The proxy's CA (for intercepted sites) and the stand-in's (for the sites passed through)."""
    deadline = time.monotonic() + 30
    ca = ca_dir / "mitmproxy-ca-cert.pem"
    while not ca.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    bundle = root / f"trust-{name}.pem"
    bundle.write_bytes(ca.read_bytes() + origin.ca_path.read_bytes())
    return bundle


def main() -> int:
    if not shutil.which("wrk") or not shutil.which("curl"):
        print("make bench needs wrk and curl: apt-get install wrk curl", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="schoolproxy-bench-") as tmp, Internet(Path(tmp) / "net") as origin:
        root = Path(tmp)
        print(f"generating {LIST_ENTRIES:,} synthetic list entries…", flush=True)
        make_lists(root)
        (root / "users.htpasswd").write_text("".join(f"{u}:{hash_pw(PASSWORD)}\n" for u in USERS))
        auths = ", ".join('"Basic ' + base64.b64encode(f"{u}:{PASSWORD}".encode()).decode() + '"' for u in USERS)
        script = root / "mix.lua"
        script.write_text(WRK_SCRIPT % auths)
        cls_us, load_s, compile_s = classify_us(root)
        setups: dict[str, tuple[int, list[str], Path]] = {}
        for name, records, workers in (("full", "true", 1), ("full-nolog", "false", 1), ("full-2w", "true", 2)):
            port = free_port()
            cfg = root / f"{name}.yaml"
            cfg.write_text(CONFIG.format(port=port, upstream=origin.proxy_url, metrics_port=free_port(),
                                         records=records, members=", ".join(USERS), name=name,
                                         upstream_ca=origin.ca_path, phrases=ROOT / "filterlists" / "phrases"))
            argv = [str(BIN / "schoolproxy"), "run", *(["--workers", "2"] if workers > 1 else []), "--config", str(cfg)]
            setups[name] = (port, argv, root / f"ca-{name}")
        trust = ["--set", f"ssl_verify_upstream_trusted_ca={origin.ca_path}", "--ignore-hosts", PASSTHROUGH_RE]
        port = free_port()
        setups["mitmdump"] = (port, [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port",
                                     str(port), "--mode", f"upstream:{origin.proxy_url}",
                                     "--set", f"confdir={root / 'ca-mitmdump'}", *trust], root / "ca-mitmdump")
        port = free_port()
        setups["core"] = (port, [sys.executable, str(ROOT / "bench" / "leancore.py"), str(port), origin.proxy_url,
                                 "--set", f"confdir={root / 'ca-core'}", *trust], root / "ca-core")
        names = NAMES if ONLY != "https" else HTTPS_NAMES
        results: dict[str, list[dict]] = {k: [] for k in names}
        rss: dict[str, float] = {}
        tree: dict[str, float] = {}
        pupil = f"{USERS[0]}:{PASSWORD}@"
        for rnd in range(ROUNDS):
            for name in names:
                port, argv, ca_dir = setups[name]
                proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                r: dict = {}
                try:
                    wait_port(port, proc)
                    if name == "full-2w":
                        time.sleep(2)  # both workers listening
                    wait_idle(proc.pid)
                    if ONLY != "https":
                        # Warm, as the HTTPS part is: the pupils sign in (checked one at a time from one
                        # address), certificates and caches fill; then the steady state is measured.
                        wrk(port, script, seconds=2)
                        cpu, own, started = tree_cpu_s(proc.pid), process_cpu_s(proc.pid), time.monotonic()
                        r = wrk(port, script)
                        # The steadier figure on a shared machine: CPU time a request of the proxy and its
                        # children; and how much of one CPU the proxy's own process had (under 100 %:
                        # it waited for a CPU, or for something else).
                        r["cpu_ms"] = (tree_cpu_s(proc.pid) - cpu) * 1000 / max(1, r["requests"])
                        if name != "full-2w":  # (its own process only supervises the workers)
                            own = process_cpu_s(proc.pid) - own
                            r["cpu_pct"] = own * 100 / (time.monotonic() - started)
                            r["own_ms"] = own * 1000 / max(1, r["requests"])
                        # One connection, one request at a time: latency without queueing, which is what
                        # a pupil's browser sees on a gateway that is not saturated.
                        one = wrk(port, script, connections=1, seconds=max(2, DURATION // 2))
                        r["p50_1"], r["p99_1"] = one["p50"], one["p99"]
                    if ONLY != "plain" and name in HTTPS_NAMES:
                        bundle, auth = ca_bundle(root, name, ca_dir, origin), pupil if name.startswith("full") else ""
                        https_load(port, proc.pid, bundle, 2, origin, auth)  # warm: certificates, sign-ins
                        tls = https_load(port, proc.pid, bundle, DURATION, origin, auth)
                        r.update({f"https_{k}": v for k, v in tls.items()})
                    rss[name] = max(rss.get(name, 0.0), rss_mb(proc.pid) if name != "full-2w" else 0.0)
                    tree[name] = max(tree.get(name, 0.0), tree_rss_mb(proc.pid))
                finally:
                    proc.terminate()
                    proc.wait(30)
                results[name].append(r)
                line = f"round {rnd + 1} {name:<11}"
                if "rps" in r:
                    line += (f" {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                             f"{r['cpu_ms']:.2f} ms CPU a request"
                             + (f" ({r['own_ms']:.2f} in the proxy process)" if "own_ms" in r else "")
                             + (f" (proxy at {r['cpu_pct']:3.0f} % of a CPU)" if "cpu_pct" in r else "") +
                             f"  non-2xx {r['non2xx']}  |  1 connection: p50 {r['p50_1']:5.2f} ms p99 {r['p99_1']:5.2f} ms")
                if "https_rps" in r:
                    line += (f"  |  HTTPS {r['https_rps']:6.0f} req/s, {r['https_cpu_ms']:.2f} ms CPU and "
                             f"{r['https_upstream_per_request']:.3f} upstream connections a request, "
                             f"{r['https_errors']} errors")
                print(line, flush=True)
        return report(results, rss, tree, cls_us, load_s, compile_s)


def report(results: dict[str, list[dict]], rss: dict[str, float], tree: dict[str, float], cls_us: float,
           load_s: float, compile_s: float) -> int:
    def med(name: str, metric: str) -> float:
        values = [r[metric] for r in results.get(name, []) if metric in r]
        return statistics.median(values) if values else float("nan")

    def worst(metric: str, minus: str, other: str = "mitmdump") -> float:
        """The worst round's difference (rounds pair each proxy with the others run beside it)."""
        pairs = [(a[metric] - b[metric]) for a, b in zip(results.get(minus, []), results.get(other, []))
                 if metric in a and metric in b]
        return max(pairs) if pairs else float("nan")

    fields = []
    if ONLY != "https":
        ratio = med("full", "rps") / med("mitmdump", "rps")
        core_ratio = med("full", "rps") / med("core", "rps")
        log_cost = 1 - med("full", "rps") / med("full-nolog", "rps")
        p99_added = med("full", "p99_1") - med("mitmdump", "p99_1")
        print()
        print(f"{'proxy':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/req':>12}{'1-conn p50':>12}"
              f"{'1-conn p99':>12}{'RSS MB':>10}{'all procs':>11}")
        for k in NAMES:
            print(f"{k:<12}{med(k, 'rps'):>10.0f}{med(k, 'p50'):>10.2f}{med(k, 'p99'):>10.2f}{med(k, 'cpu_ms'):>12.3f}"
                  f"{med(k, 'p50_1'):>12.2f}{med(k, 'p99_1'):>12.2f}{rss.get(k, 0) or float('nan'):>10.0f}"
                  f"{tree.get(k, 0):>11.0f}")
        print("plain HTTP; p50/p99 at 16 connections are queueing at saturation; CPU ms/req is the proxy's and its "
              "children's CPU time a request at 16 connections; the 1-connection columns are per-request latency "
              "(medians over rounds)")
        per_round_cpu = ", ".join(f"{b['cpu_ms'] / a['cpu_ms']:.2f}" for a, b in zip(results["full"], results["core"]))
        print(f"CPU time a request, lean core / full stack: {med('core', 'cpu_ms') / med('full', 'cpu_ms'):.2f} "
              f"(rounds: {per_round_cpu}); records off / on: "
              f"{med('full-nolog', 'cpu_ms') / med('full', 'cpu_ms'):.2f}")
        print("RSS MB is the proxy process; 'all procs' adds its children (record writer, workers), shared pages "
              "such as the memory-mapped lists counted in each")
        per_round = ", ".join(f"{a['p99_1'] - b['p99_1']:+.2f}" for a, b in zip(results["full"], results["mitmdump"]))
        print(f"1-connection p99 added over mitmdump: median {p99_added:+.2f} ms, worst round "
              f"{worst('p99_1', 'full'):+.2f} ms (rounds: {per_round}); over the lean core: worst round "
              f"{worst('p99_1', 'full', 'core'):+.2f} ms")
        print(f"lists: {LIST_ENTRIES:,} entries compiled once in {compile_s:.1f} s, then ready in "
              f"{load_s * 1000:.1f} ms; classification {cls_us:.2f} µs per lookup")
        print(f"two workers: {med('full-2w', 'rps') / med('full', 'rps'):.2f} × one worker "
              f"(this machine has {os.cpu_count()} CPUs, shared with the load generators and the test upstream)")
        print(f"recording every request costs {log_cost * 100:.1f}% of throughput (target ≤ 5%)")
        fields += [f"ratio={ratio:.2f}", f"core_ratio={core_ratio:.2f}",
                   f"core_cpu_ratio={med('core', 'cpu_ms') / med('full', 'cpu_ms'):.2f}",
                   f"cpu_ms={med('full', 'cpu_ms'):.3f}", f"classify_us={cls_us:.2f}",
                   f"load_s={load_s:.4f}", f"rss_mb={rss.get('full', 0):.0f}", f"p99_added_ms={p99_added:.2f}",
                   f"p99_added_worst_ms={worst('p99_1', 'full'):.2f}",
                   f"p99_added_core_worst_ms={worst('p99_1', 'full', 'core'):.2f}",
                   f"log_cost_pct={log_cost * 100:.1f}",
                   f"workers2_ratio={med('full-2w', 'rps') / med('full', 'rps'):.2f}"]
    if ONLY != "plain":
        print()
        print(f"{'HTTPS':<12}{'req/s':>10}{'CPU ms/request':>16}{'upstream conn/request':>24}{'errors':>8}")
        for k in HTTPS_NAMES:
            errors = sum(r.get("https_errors", 0) for r in results.get(k, []))
            print(f"{k:<12}{med(k, 'https_rps'):>10.0f}{med(k, 'https_cpu_ms'):>16.2f}"
                  f"{med(k, 'https_upstream_per_request'):>24.3f}{errors:>8}")
        print(f"HTTPS: browser sessions of {SESSION_VISITS} visits × {VISIT_REQUESTS} requests, a new tunnel per "
              f"visit, half HTTP/2 and half HTTP/1.1, {SESSIONS} sessions at once (medians over rounds)")
        fields += [f"https_ratio={med('full', 'https_rps') / med('mitmdump', 'https_rps'):.2f}",
                   f"https_core_ratio={med('full', 'https_rps') / med('core', 'https_rps'):.2f}",
                   f"https_cpu_ratio={med('mitmdump', 'https_cpu_ms') / med('full', 'https_cpu_ms'):.2f}",
                   f"https_upstream_per_request={med('full', 'https_upstream_per_request'):.3f}",
                   f"https_upstream_per_request_mitmdump={med('mitmdump', 'https_upstream_per_request'):.3f}"]
    print("bench: " + " ".join(fields + CONTENT_FIELDS))
    return 0


# -- real-time content: the same allowed mix with content scoring on and off -------------------------------
#: key=value figures of the content part, added to the last line (filled by content_bench()).
CONTENT_FIELDS: list[str] = []

CONTENT_CONFIG = """
school: Bench Primary
proxy: {{listen_host: 127.0.0.1, listen_port: {port}, upstream: "{upstream}", ca_dir: ca-content}}
lists: {{sources: [lists], metadata: lists/categories.yaml, cache_dir: cache}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
records: {{enabled: true, database: "sqlite:///records-content.db", spool_dir: spool-content}}
identity:
  proxy_auth: {{users_file: users.htpasswd}}
  groups: {{year4: {{profile: pupil, members: [{members}]}}}}
  default_profile: pupil
profiles:
  pupil:
    role: pupil
    block_categories: [adult, social-networking, games]
    content: {{scan: {scan}, alert_score: 100, block_score: 150, max_kb: 256}}
alerts: {{phrases: "{phrases}"}}
"""

#: The mix a pupil's browser fetches, each through the proxy as http://HOST/PATH: pages compressed as
#: servers send them, API JSON, plain text and a streamed reply.
CONTENT_MIX = (("news.test", "/article"), ("api.test", "/feed"), ("news.test", "/story"), ("notes.test", "/notes"),
               ("chat.test", "/chat"), ("api.test", "/feed"), ("news.test", "/article"), ("wiki.test", "/text"))


CONTENT_WRK = """
local paths = { %s }
local hosts = { %s }
local auths = { %s }
local i = 0
request = function()
  i = i + 1
  local k = (i %% #paths) + 1
  local headers = { ["Host"] = hosts[k], ["Proxy-Authorization"] = auths[(i %% #auths) + 1] }
  return wrk.format("GET", paths[k], headers)
end
"""


def content_responses() -> dict[str, tuple[bytes, int]]:
    """Whole HTTP responses by path: an article of 120 KB HTML with scripts and markup (gzip), a 30 KB
    story that is nearly all text (gzip), 16 KB of JSON, 8 KB of plain text, a 10 KB page (gzip), and a
    reply of 150 server-sent events (chunked, ~9 KB) — benign text, so nothing is blocked. Each with
    the length of its decoded body."""
    import gzip
    import json
    import random
    from detection import WORDS, page

    rnd = random.Random(3)

    def sentence(n: int) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize() + "."

    def response(body: bytes, ctype: str, gz: bool = False) -> tuple[bytes, int]:
        size = len(body)
        if gz:
            body = gzip.compress(body, 6)
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                + ("Content-Encoding: gzip\r\n" if gz else "") + "Cache-Control: no-store\r\n\r\n")
        return head.encode() + body, size

    feed = json.dumps({"posts": [{"id": i, "title": sentence(8), "body": sentence(40), "tags": ["school"]}
                                 for i in range(45)]}).encode()
    chunks = []
    for i in range(150):
        event = f"data: {json.dumps({'choices': [{'delta': {'content': rnd.choice(WORDS) + ' '}}]})}\n\n".encode()
        chunks.append(f"{len(event):x}\r\n".encode() + event + b"\r\n")
    chat = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n", sum(map(len, chunks)))
    html = "text/html; charset=utf-8"
    return {"/article": response(page(120 * 1024, list(WORDS), markup=0.7).encode(), html, gz=True),
            "/story": response(page(30 * 1024, list(WORDS), seed=2).encode(), html, gz=True),
            "/text": response(page(10 * 1024, list(WORDS), seed=3).encode(), html, gz=True),
            "/feed": response(feed, "application/json"),
            "/notes": response("\n".join(sentence(25) for _ in range(55)).encode()[:8 * 1024], "text/plain; charset=utf-8"),
            "/chat": chat}


class ContentOrigin:
    """The stand-in upstream filter and origin for the content mix: answers mitmproxy's absolute-form
    GETs on keep-alive connections with the prepared response for the path (an asyncio server in a
    thread, so that the origin costs little beside the proxy)."""

    def __init__(self, responses: dict[str, tuple[bytes, int]]):
        import asyncio
        self.responses = responses
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve(reader, writer) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    target = head.split(b" ", 2)[1].decode("latin-1")
                    path = "/" + target.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
                    writer.write(self.responses.get(path, self.responses["/text"])[0])
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, IndexError):
                pass
            finally:
                writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_serving(port: int, url: str, timeout: float = 120) -> None:
    """Until a pupil's request through the proxy is answered 200 (the port opens before the records
    database, the lists and the phrase lists are ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "-x",
                               f"http://{USERS[0]}:{PASSWORD}@127.0.0.1:{port}", url],
                              capture_output=True, text=True).stdout
        if code == "200":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the proxy did not serve {url} within {timeout:.0f} s")


def content_bench() -> int:
    """The full stack (records on, small lists) serving CONTENT_MIX to eight signed-in pupils over 16
    keep-alive connections, with content scoring on and off in alternating rounds: req/s, latency and
    the proxy's CPU time a request. Fills CONTENT_FIELDS; content_ratio = on / off in req/s."""
    sys.path.insert(0, str(ROOT / "bench"))
    with tempfile.TemporaryDirectory(prefix="schoolproxy-bench-content-") as tmp:
        root = Path(tmp)
        (root / "lists" / "social-networking").mkdir(parents=True)
        (root / "lists" / "social-networking" / "domains").write_text("socialsite.test\n")
        (root / "lists" / "categories.yaml").write_text("adult: {child_restricted: true}\nsocial-networking: {}\n"
                                                        "games: {}\n")
        (root / "users.htpasswd").write_text("".join(f"{u}:{hash_pw(PASSWORD)}\n" for u in USERS))
        auths = ", ".join('"Basic ' + base64.b64encode(f"{u}:{PASSWORD}".encode()).decode() + '"' for u in USERS)
        paths = ", ".join(f'"http://{h}{p}"' for h, p in CONTENT_MIX)
        hosts = ", ".join(f'"{h}"' for h, _ in CONTENT_MIX)
        script = root / "content.lua"
        script.write_text(CONTENT_WRK % (paths, hosts, auths))
        responses = content_responses()
        origin = ContentOrigin(responses)
        try:
            setups = {}
            for name, scan in (("content-off", "false"), ("content-on", "true")):
                port = free_port()
                cfg = root / f"{name}.yaml"
                cfg.write_text(CONTENT_CONFIG.format(port=port, upstream=origin.url, metrics_port=free_port(),
                                                     members=", ".join(USERS), scan=scan,
                                                     phrases=ROOT / "filterlists" / "phrases"))
                setups[name] = (port, [str(BIN / "schoolproxy"), "run", "--config", str(cfg)])
            results: dict[str, list[dict]] = {k: [] for k in setups}
            for rnd in range(ROUNDS):
                for name, (port, argv) in setups.items():
                    proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    try:
                        wait_port(port, proc)
                        wait_serving(port, f"http://{CONTENT_MIX[0][0]}{CONTENT_MIX[0][1]}")
                        wrk(port, script, seconds=2)  # warm: every pupil signed in
                        cpu = tree_cpu_s(proc.pid)
                        r = wrk(port, script)
                        r["cpu_ms"] = (tree_cpu_s(proc.pid) - cpu) * 1000 / max(1.0, r["rps"] * DURATION)
                        r["rss"] = rss_mb(proc.pid)
                    finally:
                        proc.terminate()
                        proc.wait(30)
                    results[name].append(r)
                    print(f"round {rnd + 1} {name:<11} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                          f"p99 {r['p99']:6.2f} ms  {r['cpu_ms']:.2f} ms CPU a request  non-2xx {r['non2xx']}  "
                          f"RSS {r['rss']:.0f} MB", flush=True)
        finally:
            origin.close()

    def med(name: str, metric: str) -> float:
        return statistics.median(r[metric] for r in results[name])

    print()
    print(f"{'content mix':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/request':>16}{'RSS MB':>10}")
    for k in results:
        print(f"{k:<12}{med(k, 'rps'):>10.0f}{med(k, 'p50'):>10.2f}{med(k, 'p99'):>10.2f}{med(k, 'cpu_ms'):>16.2f}"
              f"{med(k, 'rss'):>10.0f}")
    print("content mix: " + ", ".join(f"{h}{p} ({responses[p][1] / 1024:.0f} KB)" for h, p in dict.fromkeys(CONTENT_MIX))
          + f"; 16 connections, {len(USERS)} pupils (medians over rounds)")
    ratio = med("content-on", "rps") / med("content-off", "rps")
    CONTENT_FIELDS[:] = [f"content_rps={med('content-on', 'rps'):.0f}",
                         f"content_off_rps={med('content-off', 'rps'):.0f}", f"content_ratio={ratio:.2f}",
                         f"content_cpu_ratio={med('content-off', 'cpu_ms') / med('content-on', 'cpu_ms'):.2f}"]
    return 0


if __name__ == "__main__":
    if ONLY == "content":
        content_bench()
        print("bench: " + " ".join(CONTENT_FIELDS))
        sys.exit(0)
    if not ONLY:
        content_bench()
    sys.exit(main())
