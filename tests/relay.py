"""A TCP forwarder on 127.0.0.1 that a test can cut and restore: "the database went away" without
stopping the machine's real server."""

from __future__ import annotations

import asyncio
import threading


class TcpRelay:
    """A TCP forwarder on 127.0.0.1 that a test can cut and restore — "the database went away" without
    stopping the machine's real server. ``down()`` closes the listener and every relayed connection."""

    def __init__(self, target_port: int):
        import socket
        self.target = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.up()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        async def start():
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self._call(start())

    def down(self) -> None:
        async def stop():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
        self._call(stop())

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
