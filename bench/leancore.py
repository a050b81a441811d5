"""The benchmark's baseline: schoolproxy's lean mitmproxy core with none of its policy addons.
Usage: python bench/leancore.py PORT UPSTREAM_URL [--set OPTION=VALUE | --ignore-hosts REGEX]..."""

import asyncio
import sys

from pathlib import Path

import uvloop

from mitmproxy import options

from schoolproxy.proxy.internals import create_ca, skip_message_type_checks
from schoolproxy.proxy.master import lean_master


async def main(port: int, upstream: str, extra: list[str]) -> None:
    skip_message_type_checks()  # as `schoolproxy run` does
    opts = options.Options()
    m = lean_master(opts, policy=False)
    settings: dict[str, object] = {}
    ignore: list[str] = []
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag == "--set":
            key, _, v = value.partition("=")
            settings[key] = v
        elif flag == "--ignore-hosts":
            ignore.append(value)
    if "confdir" in settings:
        create_ca(Path(str(settings["confdir"])))  # the CA schoolproxy run would make
    opts.update(listen_host="127.0.0.1", listen_port=port, mode=[f"upstream:{upstream}"], ignore_hosts=ignore,
                **settings)
    await m.run()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3:]), loop_factory=uvloop.new_event_loop)  # as `schoolproxy run`
