"""Start and stop a real proxy process (``mitmdump -s addons/schoolproxy_addons.py`` or ``schoolproxy run``)
for end-to-end tests, and wait until it listens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    def __init__(self, argv: list[str], port: int, log_path: Path, cwd: Path = ROOT):
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_listening()

    @classmethod
    def mitmdump(cls, config: Path, workdir: Path, *extra: str, quiet: bool = True) -> "ProxyProcess":
        """``quiet``: errors only (``-q``); else warnings too, without a line per flow."""
        port = free_port()
        argv = [str(BIN / "mitmdump"), *(["-q"] if quiet else ["--flow-detail", "0", "--set", "termlog_verbosity=warn"]), "-s", str(ROOT / "addons" / "schoolproxy_addons.py"),
                "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"schoolproxy_config={config}", "--set", "schoolproxy_reload_ms=300", *extra]
        return cls(argv, port, workdir / f"mitmdump-{port}.log")

    @classmethod
    def schoolproxy_run(cls, config: Path, workdir: Path) -> "ProxyProcess":
        port = free_port()
        argv = [str(BIN / "schoolproxy"), "run", "--config", str(config), "--listen-port", str(port)]
        return cls(argv, port, workdir / f"run-{port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth_url(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"proxy did not listen within {timeout}s:\n{self.log()}")

    def signal(self, sig: int = signal.SIGHUP) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                # A clean stop lets the record writer and the alert process finish what they were handed
                # (the proxy gives them up to 30 s); on a loaded machine that is more than a moment.
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> "ProxyProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
