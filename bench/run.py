"""make bench: throughput and latency of schoolproxy against what a school would otherwise run.

One run on loopback with one load generator (wrk, 16 connections, plain HTTP keep-alive through the
proxy), the proxies measured in alternating rounds so drift on the machine hits them all alike:

  mitmdump       mitmdump -q in upstream mode with no script (the baseline a user would otherwise run)
  core           schoolproxy's lean mitmproxy core with none of its policy addons (the limit)
  full           schoolproxy run: 3M synthetic list entries, proxy auth, policy, SafeSearch, metrics,
                 every request recorded to SQLite
  full-nolog     the same with records off — the difference is what logging every request costs
  full-2w        the full stack as `schoolproxy run --workers 2` (two processes on one port)

The request mix cycles through allowed, blocked and search requests from several authenticated users,
each naming its host in Host as a browser behind an explicit proxy does.
The last line is machine-readable.
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
PASSWORD = "bench-pass"

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
proxy: {{listen_host: 127.0.0.1, listen_port: {port}, upstream: "{upstream}", ca_dir: ca}}
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


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (workers, record writer processes); pages they share,
    such as the memory-mapped lists, are counted in each."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += rss_mb(p)
        todo.extend(children.get(p, []))
    return total


def wrk(port: int, script: Path, connections: int = CONNECTIONS, seconds: int = DURATION) -> dict:
    out = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {p: _ms(re.search(rf"\s{p}%\s+([\d.]+\w+)", out).group(1)) for p in ("50", "99")}
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "non2xx": int(errors.group(1)) if errors else 0,
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


def main() -> int:
    if not shutil.which("wrk"):
        print("make bench needs wrk: apt-get install wrk", file=sys.stderr)
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
        setups = {}
        for name, records in (("full", "true"), ("full-nolog", "false")):
            port = free_port()
            cfg = root / f"{name}.yaml"
            cfg.write_text(CONFIG.format(port=port, upstream=origin.proxy_url, metrics_port=free_port(),
                                         records=records, members=", ".join(USERS)))
            setups[name] = (port, [str(BIN / "schoolproxy"), "run", "--config", str(cfg)])
        port = free_port()
        cfg = root / "full-2w.yaml"
        cfg.write_text(CONFIG.format(port=port, upstream=origin.proxy_url, metrics_port=free_port(),
                                     records="true", members=", ".join(USERS)))
        setups["full-2w"] = (port, [str(BIN / "schoolproxy"), "run", "--workers", "2", "--config", str(cfg)])
        port = free_port()
        setups["mitmdump"] = (port, [str(BIN / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port",
                                     str(port), "--mode", f"upstream:{origin.proxy_url}"])
        port = free_port()
        setups["core"] = (port, [sys.executable, str(ROOT / "bench" / "leancore.py"), str(port), origin.proxy_url])
        results: dict[str, list[dict]] = {k: [] for k in setups}
        rss: dict[str, float] = {}
        tree: dict[str, float] = {}
        for rnd in range(ROUNDS):
            for name in NAMES:
                port, argv = setups[name]
                proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    wait_port(port, proc)
                    if name == "full-2w":
                        time.sleep(2)  # both workers listening
                    r = wrk(port, script)
                    # One connection, one request at a time: latency without queueing, which is what
                    # a pupil's browser sees on a gateway that is not saturated.
                    one = wrk(port, script, connections=1, seconds=max(2, DURATION // 2))
                    r["p50_1"], r["p99_1"] = one["p50"], one["p99"]
                    rss[name] = max(rss.get(name, 0.0), rss_mb(proc.pid) if name != "full-2w" else 0.0)
                    tree[name] = max(tree.get(name, 0.0), tree_rss_mb(proc.pid))
                finally:
                    proc.terminate()
                    proc.wait(30)
                results[name].append(r)
                print(f"round {rnd + 1} {name:<11} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                      f"p99 {r['p99']:6.2f} ms  non-2xx {r['non2xx']}  |  1 connection: p50 {r['p50_1']:5.2f} ms "
                      f"p99 {r['p99_1']:5.2f} ms", flush=True)
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99", "p50_1", "p99_1")}
               for k, v in results.items()}
    ratio = med["full"]["rps"] / med["mitmdump"]["rps"]
    core_ratio = med["full"]["rps"] / med["core"]["rps"]
    log_cost = 1 - med["full"]["rps"] / med["full-nolog"]["rps"]
    p99_added = med["full"]["p99_1"] - med["mitmdump"]["p99_1"]
    print()
    print(f"{'proxy':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'1-conn p50':>12}{'1-conn p99':>12}{'RSS MB':>10}"
          f"{'all procs':>11}")
    for k in NAMES:
        m = med[k]
        print(f"{k:<12}{m['rps']:>10.0f}{m['p50']:>10.2f}{m['p99']:>10.2f}{m['p50_1']:>12.2f}{m['p99_1']:>12.2f}"
              f"{rss.get(k, 0) or float('nan'):>10.0f}{tree.get(k, 0):>11.0f}")
    print("p50/p99 at 16 connections are queueing at saturation; the 1-connection columns are per-request latency")
    print("RSS MB is the proxy process; 'all procs' adds its children (record writer, workers), shared pages "
          "such as the memory-mapped lists counted in each")
    print(f"1-connection p99 added over mitmdump {p99_added:+.2f} ms, over the lean core "
          f"{med['full']['p99_1'] - med['core']['p99_1']:+.2f} ms")
    print(f"lists: {LIST_ENTRIES:,} entries compiled once in {compile_s:.1f} s, then ready in {load_s * 1000:.1f} ms; "
          f"classification {cls_us:.2f} µs per lookup")
    print(f"two workers: {med['full-2w']['rps'] / med['full']['rps']:.2f} × one worker "
          f"(this machine has {os.cpu_count()} CPUs, shared with wrk and the test upstream)")
    print(f"recording every request costs {log_cost * 100:.1f}% of throughput (target ≤ 5%)")
    print(f"bench: ratio={ratio:.2f} core_ratio={core_ratio:.2f} classify_us={cls_us:.2f} load_s={load_s:.4f} "
          f"rss_mb={rss.get('full', 0):.0f} p99_added_ms={p99_added:.2f} log_cost_pct={log_cost * 100:.1f} "
          f"workers2_ratio={med['full-2w']['rps'] / med['full']['rps']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
