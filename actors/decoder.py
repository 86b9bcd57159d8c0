"""Decoder actors `dbus:<pipeline>:decoder:<i>`: decode the binlog's rows for a `mysql` source with
`source.decoders` >= 1, so that one pipeline's decoding uses more than one core or node. The reader's stream
hands each a batch of whole transactions as raw rows events; it returns the row count and the Arrow batch,
which stays in the object store (the reader hands on its reference; see `dbus_ray.mysql.decode_pool`). The
pool is started by the pipeline's reader (which owns the decoders: they end with it), on the cluster's
nodes in turn, the reader's own last."""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dbus_ray.actors.owned import start_owned
from dbus_ray.constants import actor_name
from dbus_ray.model import RowBatch
from dbus_ray.mysql.decode_pool import DEPTH_PER_DECODER, DecoderLost, decode_packed
from dbus_ray.mysql.keys import MessageKeys


@ray.remote(num_cpus=0, max_restarts=0)
class Decoder:
    def __init__(self, pipeline: str, options: Any) -> None:
        self.pipeline = pipeline
        self.keys = MessageKeys(pipeline, options.message_key_columns, options.key_change)
        self.rows = 0

    def pid(self) -> int:
        return os.getpid()

    def decode(self, packed: bytes) -> tuple[int, RowBatch]:
        """(rows, the batch) of whole transactions, in binlog order (`decode_pool.pack`)."""
        batch = decode_packed(self.pipeline, packed, self.keys)
        n = batch.num_rows
        self.rows += n
        return n, batch


def nodes_in_turn() -> list[str]:
    """The cluster's live nodes, the reader's own last: its core is busy reading the binlog."""
    here = ray.get_runtime_context().get_node_id()
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    return [n for n in alive if n != here] + [here]


class DecoderPool:
    """`n` decoder actors over the nodes, the reader's own node last (decoder i on the i-th of
    `nodes_in_turn`; a node lost later ends its decoder, and the pipeline's restart starts a new pool on the
    nodes alive then). Each batch goes to the decoder with the fewest batches still being decoded (the first
    of them in that order): one sharing the reader's core falls behind, and an even turn would hold every
    batch after its own. When every decoder has DEPTH_PER_DECODER batches, the reader decodes the next one
    itself (`full`, `decode_pool.InOrder`)."""

    def __init__(self, pipeline: str, options: Any, n: int) -> None:
        self.pipeline = pipeline
        self.options = options
        self.nodes = nodes_in_turn()
        self.decoders: list[Any] = [self._start(i) for i in range(n)]
        self.working: list[tuple[Any, int]] = []  # (row count's ref, decoder) of the batches not decoded yet

    def _start(self, i: int) -> Any:
        # not soft: a soft preference was measured to land elsewhere when the node had no idle worker
        where = NodeAffinitySchedulingStrategy(self.nodes[i % len(self.nodes)], soft=False)
        return start_owned(Decoder, "decoder", actor_name(self.pipeline, "decoder", str(i)), where, self.pipeline,
                           self.options)

    def _busy(self) -> list[int]:
        """The batches each decoder has still being decoded."""
        if self.working:
            done = set(ray.wait([r for r, _ in self.working], num_returns=len(self.working), timeout=0)[0])
            self.working = [(r, j) for r, j in self.working if r not in done]
        busy = [0] * len(self.decoders)
        for _, j in self.working:
            busy[j] += 1
        return busy

    def full(self) -> bool:
        """Every decoder has DEPTH_PER_DECODER batches still being decoded."""
        return min(self._busy()) >= DEPTH_PER_DECODER

    def decode(self, packed: bytes) -> tuple[Any, Any, int]:
        """Hand packed transactions to the next decoder: (its row count's ref, its batch's ref, its index)."""
        busy = self._busy()
        i = busy.index(min(busy))
        rows, batch = self.decoders[i].decode.options(num_returns=2).remote(packed)
        self.working.append((rows, i))
        return rows, batch, i

    def done(self, handle: tuple[Any, Any, int]) -> bool:
        ready, _ = ray.wait([handle[0]], timeout=0)
        return bool(ready)

    def result(self, handle: tuple[Any, Any, int]) -> tuple[int, Any]:
        """(rows, the batch's ref) once the decoder returned; its error (a DecodeError naming the binlog
        position), or DecoderLost when it died."""
        try:  # (the caller is the reader's polling thread, not its event loop: wait on a future)
            return handle[0].future().result(), handle[1]
        except ray.exceptions.RayActorError as exc:
            raise DecoderLost(f"decoder {actor_name(self.pipeline, 'decoder', str(handle[2]))} was lost "
                              f"({type(exc).__name__}): its rows are not delivered, the pipeline stops before "
                              "them") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            raise cause from None

    def close(self) -> None:
        for d in self.decoders:
            try:
                ray.kill(d, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.decoders = []
