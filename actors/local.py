"""In-process stand-ins for actor handles, for a fused pipeline (`flow.placement: fused`): all stages of
one pipeline live in one actor process and call each other through `LocalHandle`s exactly as they call
Ray actors (`handle.method.remote(...)`, then `await` the result or not), so each stage's code is the
same in both placements.

Like a Ray actor, a wrapped stage runs its calls in the order they were made: coroutine methods as tasks
on the process's event loop, plain methods at once. A call from another thread (a writer acknowledging
to the reader from its sink thread) is handed to the loop thread-safely. `ThreadedWriter` runs a writer's
blocking sink I/O one batch at a time, in order, on a thread of its own, so a slow sink never blocks the
event loop."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dbus_ray.parcel import Parcel


class LocalHandle:
    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> _LocalMethod:
        return _LocalMethod(self, getattr(self._target, name))


class ThreadedWriter:
    """A writer stage behind an async `write`: the parcel's rows are fetched on the event loop, the sink
    is written on the writer's own thread, one parcel at a time in call order (the lock is fair)."""

    def __init__(self, writer: Any, name: str) -> None:
        self.writer = writer
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.lock = asyncio.Lock()
        self.closed = False  # a write after `close` (one waiting for the lock then) touches no sink

    async def write(self, parcel: Parcel) -> int:
        async with self.lock:
            if self.closed:
                raise RuntimeError(f"writer {self.writer.sink_name} is closed: batch {parcel.seq} not written")
            batches = await parcel.fetch()
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.writer.deliver, parcel,
                                                                    batches)

    async def close(self) -> None:
        """Close the sink once the write in progress (if any) is done; no later write reaches it."""
        self.closed = True
        async with self.lock:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.writer.close)
        self.executor.shutdown(wait=False)


class _LocalMethod:
    def __init__(self, handle: LocalHandle, method: Any) -> None:
        self.handle = handle
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Start the call; returns an awaitable on the loop's thread (a concurrent Future elsewhere)."""
        h = self.handle
        if inspect.iscoroutinefunction(self.method):
            future: Future = asyncio.run_coroutine_threadsafe(self.method(*args, **kwargs), h._loop)
        else:
            future = Future()
            try:
                future.set_result(self.method(*args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - handed to whoever awaits the call, as Ray does
                future.set_exception(exc)
        if _on_loop_thread(h._loop):
            return asyncio.wrap_future(future, loop=h._loop)
        return future


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
