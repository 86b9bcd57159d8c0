"""A private Redis (Debian's `redis-server`, `make install` installs it) on loopback and a free port, for Ray's
GCS fault tolerance in the tests: append-only file on, in a temp dir of its own, a password."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from dbus_ray.devstack import free_port


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.dir = Path(tempfile.mkdtemp(prefix="redis"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Redis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--requirepass", self.password, "--daemonize", "no"],
            stdout=open(self.dir / "redis.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    if b"+PONG" in conn.recv(100):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"redis-server on port {self.port} did not answer in 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
