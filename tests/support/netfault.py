"""Network faults between a client and a TCP server: a proxy the caller controls.

Used by the network-fault tests and the chaos run: point a pipeline's DSN at the proxy
(``proxy.dsn(mariadb.dsn)``) and, while it runs, add latency, cap the bandwidth, black-hole the link,
reset every connection or refuse new ones::

    with FaultProxy("127.0.0.1", mariadb.port) as proxy:
        dsn = proxy.dsn(mariadb.dsn)
        proxy.set_latency(0.05, 0.2)      # each chunk arrives 50-200 ms after it was sent, in order
        proxy.set_bandwidth(20_000)       # bytes per second and direction
        proxy.blackhole()                 # connections stay open (and new ones are accepted), nothing moves
        proxy.reset_all()                 # every open connection gets a TCP RST, both sides
        proxy.outage(2.0)                 # reset all and refuse new connections for 2 s
        proxy.clear()                     # back to a plain pipe
        proxy.stats()                     # connections, resets, refused, binlog dumps, bytes

The proxy runs an asyncio loop in a daemon thread of the calling process; every control method is
thread-safe and takes effect at once. ``stats()["binlog_dumps"]`` counts MySQL COM_BINLOG_DUMP /
COM_BINLOG_DUMP_GTID requests seen from clients (replication (re)connects; not visible through TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy"]

CHUNK = 64 * 1024
#: Chunks a direction holds while delayed; a full queue stops reading from the sender (back-pressure).
QUEUE_CHUNKS = 256
_COM_BINLOG_DUMP = (0x12, 0x1E)  # COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID
_LINGER_RST = struct.pack("ii", 1, 0)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    writer.transport.abort()


class _Link:
    """One client connection and its connection to the server."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        _abort(self.client)
        _abort(self.server)


class FaultProxy:
    """A TCP proxy on ``host:port`` (a free port by default) forwarding to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._rng = random.Random(seed)
        self._latency: tuple[float, float] = (0.0, 0.0)
        self._bandwidth: int | None = None
        self._blackholed = False
        self._refusing = False
        self._links: set[_Link] = set()
        self._counts = {"connections": 0, "resets": 0, "refused": 0, "binlog_dumps": 0, "bytes_to_server": 0,
                        "bytes_to_client": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` of the proxy."""
        return f"{self.host}:{self.port}"

    def dsn(self, dsn: str) -> str:
        """``dsn`` (``scheme://user:password@host:port[/...]``) with host and port replaced by the proxy's."""
        parts = urlsplit(dsn)
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{self.address}"))

    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"fault-proxy-{self.target[1]}", daemon=True)
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._listen(), loop)
        try:
            ready.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port,
                                                  reuse_address=True)
        self._port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Close the listener and every connection (RST); idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            links, self._links = list(self._links), set()
            for link in links:
                link.abort()
            await asyncio.gather(*(t for link in links for t in link.tasks), return_exceptions=True)
            await asyncio.sleep(0.05)  # let the connection handlers finish

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ faults
    def set_latency(self, low: float, high: float | None = None) -> None:
        """Delay every chunk by a uniform random ``low``..``high`` seconds (``high`` defaults to ``low``),
        each direction in order; 0 turns it off."""
        high = low if high is None else high
        if low < 0 or high < low:
            raise ValueError(f"latency must be 0 <= low <= high, got {low}..{high}")
        self._latency = (low, high)

    def set_bandwidth(self, bytes_per_second: int | None) -> None:
        """Cap each direction of each connection at ``bytes_per_second``; None turns the cap off."""
        if bytes_per_second is not None and bytes_per_second < 1:
            raise ValueError(f"bandwidth must be at least 1 byte/s, got {bytes_per_second}")
        self._bandwidth = bytes_per_second

    def blackhole(self, on: bool = True) -> None:
        """Stop (or resume) moving bytes: connections stay open, new ones are accepted, nothing is
        forwarded (what was sent meanwhile is delivered once the hole closes, as TCP retransmission would)."""
        self._blackholed = on

    def refuse(self, on: bool = True) -> None:
        """Reset new connections at once (a server that is down) or accept them again."""
        self._refusing = on

    def reset_all(self) -> int:
        """Send a TCP RST to both ends of every open connection; returns how many were reset."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not started")

        async def reset() -> int:
            links = list(self._links)
            for link in links:
                link.abort()
            self._links.difference_update(links)
            self._counts["resets"] += len(links)
            return len(links)

        return asyncio.run_coroutine_threadsafe(reset(), loop).result(timeout=10)

    def outage(self, seconds: float) -> int:
        """Reset every connection and refuse new ones for ``seconds``; returns how many were reset."""
        self.refuse(True)
        try:
            n = self.reset_all()
            time.sleep(seconds)
        finally:
            self.refuse(False)
        return n

    def clear(self) -> None:
        """No latency, no bandwidth cap, no black hole, connections accepted (open ones are kept)."""
        self._latency = (0.0, 0.0)
        self._bandwidth = None
        self._blackholed = False
        self._refusing = False

    def stats(self) -> dict[str, int]:
        """Counters since start: connections (accepted and forwarded), open, resets, refused,
        binlog_dumps, bytes_to_server, bytes_to_client."""
        return {**self._counts, "open": len(self._links)}

    # ------------------------------------------------------------------ forwarding
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self._counts["refused"] += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, TimeoutError):
            self._counts["refused"] += 1
            _abort(writer)
            return
        self._counts["connections"] += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._direction(link, reader, up_writer, "bytes_to_server")),
            asyncio.ensure_future(self._direction(link, up_reader, writer, "bytes_to_client")),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        if link in self._links:  # one side closed: close the other one too (FIN)
            self._links.discard(link)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _hole(self) -> None:
        while self._blackholed:
            await asyncio.sleep(0.02)

    async def _direction(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                         counter: str) -> None:
        """Read chunks, stamp each with the time it is due, and a second task writes them when due; the end
        of the stream (FIN) or a reset is passed on to the other side."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        sender = asyncio.ensure_future(self._send(queue, dst, counter))
        last_due = 0.0
        try:
            while True:
                await self._hole()
                data = await src.read(CHUNK if self._bandwidth is None else max(1, min(CHUNK, self._bandwidth // 10)))
                if not data:
                    break
                if counter == "bytes_to_server" and len(data) >= 5 and data[4] in _COM_BINLOG_DUMP:
                    self._counts["binlog_dumps"] += 1
                low, high = self._latency
                delay = self._rng.uniform(low, high) if high else 0.0
                last_due = max(last_due, time.monotonic() + delay)  # in order, like a TCP stream
                await queue.put((last_due, data))
            await queue.put(None)
            await sender
            if dst.can_write_eof():  # pass the FIN on (a server that died closes its sockets)
                dst.write_eof()
        except (ConnectionError, OSError):
            link.abort()  # a reset on one side resets the other
        finally:
            sender.cancel()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes] | None], dst: asyncio.StreamWriter,
                    counter: str) -> None:
        while (item := await queue.get()) is not None:
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            while data:
                await self._hole()
                piece = data
                bandwidth = self._bandwidth
                if bandwidth:  # pieces of 1/20 s each, every one paid for before it goes out
                    piece = data[: max(1, bandwidth // 20)]
                    await asyncio.sleep(len(piece) / bandwidth)
                data = data[len(piece):]
                dst.write(piece)
                await dst.drain()
                self._counts[counter] += len(piece)
