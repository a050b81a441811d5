"""The benchmark's baseline: schoolproxy's lean mitmproxy core with none of its policy addons.
Usage: python bench/leancore.py PORT UPSTREAM_URL"""

import asyncio
import sys

from mitmproxy import options

from schoolproxy.proxy.master import lean_master


async def main(port: int, upstream: str) -> None:
    opts = options.Options()
    m = lean_master(opts, policy=False)
    opts.update(listen_host="127.0.0.1", listen_port=port, mode=[f"upstream:{upstream}"])
    await m.run()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
