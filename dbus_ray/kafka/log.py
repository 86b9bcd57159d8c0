"""Read a partition's log as the broker stores it (raw Fetch requests, Kafka protocol) and apply the
`read_committed` rules on the client side.

It shows what the log holds beside what a read_committed consumer gets: the records of aborted or still
open transactions and the commit/abort markers, so tests can see a transaction in the log before it ends:

- `record_batches(bootstrap, topic, partition)` fetches the partition from offset 0 with Fetch v4 and returns
  each record batch's header (`Batch`): base and last offset, producer id and epoch, the `isTransactional`
  and `isControl` attributes, and for a control batch the marker type (0 abort, 1 commit) from its control
  record's key. Record bodies are not decoded, so any compression works.
- `committed_offsets(batches)` keeps the offsets of non-transactional batches and of transactions that
  ended with a commit marker; it drops those of transactions that ended with an abort marker, of
  transactions still open at the end of the log, and of an open transaction whose producer went on with a
  newer epoch (fenced without an abort marker).
- `read_committed(bootstrap, topic)` reads every message of the topic with librdkafka (read_uncommitted,
  `assign()`) and returns those at committed offsets, in partition order.

Used by tests to find open transactions in the log and to cross-check the broker's read_committed answer
(one request per partition leader, no authentication).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FETCH = 1
FETCH_VERSION = 4
TRANSACTIONAL = 0x10
CONTROL = 0x20
ABORT, COMMIT = 0, 1
_HEADER = struct.Struct(">qiibIhiqqqhii")  # record batch v2 header, 61 bytes


@dataclass(frozen=True)
class Batch:
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    transactional: bool
    control: bool
    marker: int | None = None  # control batches: ABORT or COMMIT

    @property
    def offsets(self) -> range:
        return range(self.base_offset, self.last_offset + 1)


class KafkaLogError(RuntimeError):
    pass


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, next position)."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _fetch(host: str, port: int, topic: str, partition: int, offset: int, max_bytes: int,
           timeout: float) -> tuple[int, int, bytes]:
    """One Fetch v4 (read_uncommitted): (error code, high watermark, record bytes)."""
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + _string(topic) + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset,
                                                                                          max_bytes)
    request = struct.pack(">hhi", FETCH, FETCH_VERSION, 1) + _string("dbus-kafka-log") + body
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        conn.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _read(conn, 4))[0]
        data = _read(conn, size)
    pos = 8  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", data, pos)
    pos += 4
    for _ in range(topics):
        (length,) = struct.unpack_from(">h", data, pos)
        pos += 2 + length
        (partitions,) = struct.unpack_from(">i", data, pos)
        pos += 4
        for _ in range(partitions):
            number, error, high, _stable = struct.unpack_from(">ihqq", data, pos)
            pos += 22
            (aborted,) = struct.unpack_from(">i", data, pos)
            pos += 4 + max(aborted, 0) * 16
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            records = data[pos:pos + max(length, 0)]
            pos += max(length, 0)
            if number == partition:
                return error, high, records
    raise KafkaLogError(f"fetch {topic}/{partition}: the answer holds no such partition")


def _read(conn: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            raise KafkaLogError("the broker closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def parse_batches(records: bytes) -> list[Batch]:
    """The complete record batches (magic 2) in a Fetch answer's record bytes; a cut batch at the end is left
    out."""
    out: list[Batch] = []
    pos = 0
    while pos + _HEADER.size <= len(records):
        (base, length, _epoch, magic, _crc, attributes, last_delta, _first_ts, _max_ts, producer_id,
         producer_epoch, _sequence, count) = _HEADER.unpack_from(records, pos)
        end = pos + 12 + length
        if end > len(records):
            break
        if magic != 2:
            raise KafkaLogError(f"record batch at offset {base} has magic {magic} (only 2 is read)")
        marker = None
        if attributes & CONTROL and count > 0:
            # record: length, attributes (1 byte), timestamp delta, offset delta, key length, key
            at = pos + _HEADER.size
            _, at = _varint(records, at)
            at += 1
            _, at = _varint(records, at)
            _, at = _varint(records, at)
            key_length, at = _varint(records, at)
            if key_length >= 4:
                _version, marker = struct.unpack_from(">hh", records, at)
        out.append(Batch(base, base + last_delta, producer_id, producer_epoch, bool(attributes & TRANSACTIONAL),
                         bool(attributes & CONTROL), marker))
        pos = end
    return out


def leaders(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[int, tuple[str, int]]:
    """{partition: (host, port) of its leader}."""
    from confluent_kafka.admin import AdminClient

    # all topics: asking for one by name makes a broker with auto-create create it
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise KafkaLogError(f"topic {topic} not found on {bootstrap}")
    brokers = {b.id: (b.host, b.port) for b in metadata.brokers.values()}
    return {p: brokers[meta.leader] for p, meta in found.partitions.items()}


def record_batches(bootstrap: str, topic: str, partition: int, *, timeout: float = 10.0,
                   max_bytes: int = 8 << 20) -> list[Batch]:
    """Every record batch header of a partition, from offset 0 to its end."""
    host, port = leaders(bootstrap, topic, timeout)[partition]
    out: list[Batch] = []
    offset = 0
    deadline = time.monotonic() + 10 * timeout
    while time.monotonic() < deadline:
        error, high, records = _fetch(host, port, topic, partition, offset, max_bytes, timeout)
        if error:
            raise KafkaLogError(f"fetch {topic}/{partition} at {offset}: error code {error}")
        batches = [b for b in parse_batches(records) if b.last_offset >= offset]
        if not batches:
            if records and offset < high:
                max_bytes *= 2  # one batch larger than max_bytes
                continue
            return out
        out.extend(batches)
        offset = batches[-1].last_offset + 1
    raise KafkaLogError(f"fetch {topic}/{partition}: not at the end after {10 * timeout:.0f} s")


def committed_offsets(batches: Iterable[Batch]) -> set[int]:
    """The offsets a read_committed consumer may see (see the module docstring)."""
    keep: set[int] = set()
    open_txn: dict[int, tuple[int, list[Batch]]] = {}  # producer id -> (epoch, its batches since its last marker)
    for batch in batches:
        if batch.control:
            _, pending = open_txn.pop(batch.producer_id, (0, []))
            if batch.marker == COMMIT:
                for b in pending:
                    keep.update(b.offsets)
            continue
        if not batch.transactional:
            keep.update(batch.offsets)
            continue
        epoch, pending = open_txn.get(batch.producer_id, (batch.producer_epoch, []))
        if batch.producer_epoch > epoch:  # a newer epoch of the producer: the older open transaction was fenced
            pending = []
        open_txn[batch.producer_id] = (batch.producer_epoch, pending + [batch])
    return keep


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    return sorted(leaders(bootstrap, topic, timeout))


def read_committed(bootstrap: str, topic: str, *, timeout: float = 60.0) -> list[Any]:
    """Every message of `topic` a read_committed consumer of a Kafka broker would get (all partitions,
    from the beginning, each partition in order), decided from the log's transaction markers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    partitions = partitions_of(bootstrap, topic)
    visible = {p: committed_offsets(record_batches(bootstrap, topic, p)) for p in partitions}
    ends = {p: max(visible[p], default=-1) for p in partitions}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dbus-kafka-log", "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": "read_uncommitted"})
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        done = {p for p in partitions if ends[p] < 0}
        last: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise KafkaLogError(f"reading {topic}: not at the end after {timeout:.0f} s")
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        raise KafkaLogError(f"reading {topic}: {msg.error().str()}")
                    if last.get(msg.partition(), -1) >= ends[msg.partition()]:
                        done.add(msg.partition())
                    continue
                last[msg.partition()] = msg.offset()
                if msg.offset() in visible[msg.partition()]:
                    out.append(msg)
                if msg.offset() >= ends[msg.partition()]:
                    done.add(msg.partition())
    finally:
        consumer.close()
    return out
