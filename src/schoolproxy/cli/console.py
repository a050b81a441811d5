"""``schoolproxy console``: the safeguarding console, a web app on the gateway's admin address (HTTPS)."""

from __future__ import annotations

import asyncio
import logging
import sys


def register(sub) -> None:
    p = sub.add_parser("console", help="the safeguarding console: a web app for the DSL, the head teacher, the "
                                       "office and the network manager (HTTPS)")
    p.set_defaults(func=cmd_console)
    p.add_argument("--config", default=None)
    p.add_argument("--listen", help="host:port, overriding console.listen")


def cmd_console(args) -> int:
    from schoolproxy.cli.common import open_records
    from pydantic import ValidationError

    from schoolproxy.config import ConfigError, ConsoleSettings
    from schoolproxy.console import create_app
    from schoolproxy.console.certs import console_certificate
    from schoolproxy.console.server import serve

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)   # schema checks at start are not news
    sys.stdout.reconfigure(line_buffering=True)
    cfg, db = open_records(args.config)
    if args.listen:
        try:
            console = ConsoleSettings.model_validate({**cfg.console.model_dump(), "listen": args.listen})
        except ValidationError as e:
            raise ConfigError(f"--listen: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        cfg = cfg.model_copy(update={"console": console})
    files = console_certificate(cfg)
    app = create_app(args.config, db, files.certificate)

    def ready(port: int) -> None:
        host = cfg.console.hostnames[0] if cfg.console.hostnames else cfg.console.host
        print(f"schoolproxy console: https://{host}:{port}/ (certificate {files.certificate}, issued by the "
              f"proxy's CA; {'issued now' if files.issued else 'valid'})", flush=True)
    asyncio.run(serve(app, cfg, ready))
    return 0
