"""`decode_pool.InOrder`: batches go to the decoders while one has room, the reader decodes the next ones
itself while every decoder is full (up to READER_AHEAD of them while a decoder's batch is not done), and the
batches leave in the order they were read whoever decoded them; an error of a batch decoded by the reader
comes after the batches read before it."""

from __future__ import annotations

from typing import Any

import pytest

from dbus_ray.mysql import decode_pool
from dbus_ray.mysql.decode_pool import DEPTH_PER_DECODER, READER_AHEAD, InOrder, RawTxns
from dbus_ray.parcel import Remote


def raw(i: int) -> RawTxns:
    txns = RawTxns.__new__(RawTxns)
    txns.txns, txns.tables, txns.ts = [i], frozenset({("db", "t")}), float(i)
    return txns


class Stream:
    """`n` batches of raw transactions, all sent by the server already."""

    def __init__(self, n: int) -> None:
        self.next, self.n = 0, n

    def buffered(self) -> bool:
        return self.next < self.n

    def read(self, max_rows: int) -> tuple[RawTxns, float] | None:
        if self.next >= self.n:
            return None
        self.next += 1
        return raw(self.next - 1), float(self.next - 1)


class Pool:
    """One decoder that finishes a batch only when the reader waits for it (a slow node)."""

    def __init__(self) -> None:
        self.working: list[int] = []
        self.most = 0

    def full(self) -> bool:
        return len(self.working) >= DEPTH_PER_DECODER

    def decode(self, packed: list[int]) -> int:
        self.working.append(packed[0])
        self.most = max(self.most, len(self.working))
        return packed[0]

    def done(self, handle: int) -> bool:
        return handle not in self.working

    def result(self, handle: int) -> tuple[int, Any]:
        self.working.remove(handle)
        return 1, ("decoder", handle)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def in_process(monkeypatch: Any) -> None:
    monkeypatch.setattr(decode_pool, "pack", lambda txns: txns)
    monkeypatch.setattr(decode_pool, "decoded", lambda txns: [("reader", txns[0])])


def drain(order: InOrder, stream: Stream) -> list[tuple[str, int]]:
    out = []
    for seq in range(1, 100):
        batch = order.poll(stream, 1000, "p", seq, lambda: None)
        if batch is None:
            return out
        out.append(batch.ref if type(batch) is Remote else batch.parts[0])
    raise AssertionError("never drained")


def test_batches_leave_in_read_order_decoded_by_the_decoder_or_by_the_reader() -> None:
    pool = Pool()
    got = drain(InOrder(pool, 1), Stream(40))
    assert [i for _, i in got] == list(range(40))
    by = {who for who, _ in got}
    assert by == {"decoder", "reader"}, got
    assert pool.most == DEPTH_PER_DECODER  # the decoder never had more than its depth


def test_a_decode_error_of_the_reader_comes_after_the_batches_read_before_it(monkeypatch: Any) -> None:
    def decoded(txns: list[int]) -> list[Any]:
        if txns[0] == 3:
            raise ValueError("batch 3 is broken")
        return [("reader", txns[0])]

    monkeypatch.setattr(decode_pool, "decoded", decoded)
    order, stream = InOrder(Pool(), 1), Stream(12)
    got = []
    with pytest.raises(ValueError, match="batch 3 is broken"):
        for seq in range(1, 100):
            batch = order.poll(stream, 1000, "p", seq, lambda: None)
            got.append(batch.ref if type(batch) is Remote else batch.parts[0])
    assert [i for _, i in got] == [0, 1, 2]


def test_the_reader_decodes_ahead_while_the_oldest_batch_is_at_a_decoder(monkeypatch: Any) -> None:
    """A decoder that is behind (here: its first batch, done only when the reader waits for it): the reader
    decodes READER_AHEAD batches before it waits, not one per batch the decoder holds."""
    by_reader: list[int] = []
    waited_after: list[int] = []
    pool = Pool()

    def decoded(txns: list[int]) -> list[Any]:
        by_reader.append(txns[0])
        return [("reader", txns[0])]

    def result(handle: int, waited: Any = pool.result) -> tuple[int, Any]:
        waited_after.append(len(by_reader))
        return waited(handle)

    monkeypatch.setattr(decode_pool, "decoded", decoded)
    monkeypatch.setattr(pool, "result", result)
    got = drain(InOrder(pool, 1), Stream(40))
    assert [i for _, i in got] == list(range(40))
    assert waited_after[0] == READER_AHEAD  # the first wait for the decoder came after that many own batches
    assert by_reader[:READER_AHEAD] == list(range(DEPTH_PER_DECODER, DEPTH_PER_DECODER + READER_AHEAD))
