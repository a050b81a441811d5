"""``schoolproxy run``: the filtering proxy (one process, or ``--workers N`` supervised)."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sys
from pathlib import Path

from schoolproxy.gateway.modes import proxy_modes
from schoolproxy.private import private_dir
from schoolproxy.snapshot import build_snapshot, worker_from_env


def register(sub) -> None:
    p = sub.add_parser("run", help="start the filtering proxy")
    p.set_defaults(func=cmd_run)
    p.add_argument("--config", default=None)
    p.add_argument("--listen-host", help="override proxy.listen_host")
    p.add_argument("--listen-port", type=int, help="override proxy.listen_port")
    p.add_argument("--verbose", action="store_true", help="log every request mitmproxy handles")
    p.add_argument("--workers", type=int, default=1,
                   help="proxy processes sharing the port (SO_REUSEPORT); about one per CPU core")



def cmd_run(args) -> int:
    import uvloop
    from mitmproxy import exceptions, options

    from schoolproxy.proxy.internals import create_ca, listen_with_reuse_port, skip_message_type_checks
    from schoolproxy.proxy.master import lean_master
    from schoolproxy.proxy.workers import supervise

    # A fatal signal (a compiled list file truncated by hand while mapped: SIGBUS) is reported on stderr
    # with where it happened, not a silent exit; systemd or the supervisor restarts, and the damaged cache
    # is then found when it is verified and compiled again.
    faulthandler.enable()
    if not 1 <= args.workers <= 64:
        print("error: --workers must be between 1 and 64", file=sys.stderr)
        return 2
    snap = build_snapshot(args.config)  # fail fast, with a clear message, before starting anything
    cfg = snap.config
    worker, workers = worker_from_env()
    if workers == 1:  # once, before any worker starts (and before mitmproxy would create a CA of its own)
        create_ca(cfg.path(cfg.proxy.ca_dir))
    if args.workers > 1 and workers == 1:  # the supervisor: the lists are compiled now, once, for all
        _migrate_before_workers(cfg)
        return supervise([sys.executable, "-c", "import sys; from schoolproxy.cli import main; sys.exit(main())",
                          *sys.argv[1:]], args.workers)
    if workers > 1:
        listen_with_reuse_port()
    skip_message_type_checks()

    # mitmproxy's terminal log filters by its own verbosity option; let records reach it, line by line
    # (systemd's journal should see each line as it happens).
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    sys.stdout.reconfigure(line_buffering=True)
    if not args.verbose:  # one line per client connection is noise on a school's gateway
        logging.getLogger("mitmproxy.proxy.server").setLevel(logging.WARNING)

    async def serve() -> int:
        opts = options.Options()
        master = lean_master(opts, verbose=args.verbose)
        ca_dir = cfg.path(cfg.proxy.ca_dir)
        private_dir(ca_dir, tighten=True)  # the CA key impersonates any site to every device
        try:
            opts.update(confdir=str(ca_dir), listen_host=args.listen_host or cfg.proxy.listen_host,
                        mode=proxy_modes(cfg, args.listen_host),
                        listen_port=args.listen_port or cfg.proxy.listen_port,
                        schoolproxy_config=str(args.config))
        except exceptions.OptionsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, master.shutdown)
        ca = Path(opts.confdir).expanduser() / "mitmproxy-ca-cert.pem"
        listeners = []
        if cfg.proxy.mode != "transparent":
            listeners.append(f"explicit proxy on {opts.listen_host}:{opts.listen_port}")
        if cfg.proxy.transparent_port() is not None:
            listeners.append(f"transparent proxy on {opts.listen_host}:{cfg.proxy.transparent_port()}")
        print(f"schoolproxy{f' worker {worker}' if workers > 1 else ''}: {'; '.join(listeners)}; "
              f"upstream filter: {cfg.proxy.upstream or 'none (direct)'}; CA certificate for clients: {ca}",
              flush=True)
        await master.run()
        return 0

    # uvloop: libuv's event loop in C under mitmproxy's asyncio code. mitmproxy spends much of each
    # connection in the loop (a task per hook, a read and a write per TLS record); every other worker,
    # monitor and subprocess the proxy starts keeps working on it unchanged.
    return asyncio.run(serve(), loop_factory=uvloop.new_event_loop)


def _migrate_before_workers(cfg) -> None:
    """Bring the database schema up to date once, before the workers start using it."""
    if not (cfg.records.enabled or cfg.alerts.enabled):
        return
    from schoolproxy.records import open_database, upgrade
    try:
        upgrade(open_database(cfg.database_url()))
    except Exception as e:  # the workers spool records until the database can be used
        print(f"schoolproxy: cannot prepare the records database yet (records are spooled meanwhile): "
              f"{str(e).splitlines()[0][:300]}", file=sys.stderr, flush=True)
