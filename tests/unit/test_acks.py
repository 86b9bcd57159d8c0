"""Acknowledgement bookkeeping (`dbus_ray.acks`) alone: no Ray."""

from __future__ import annotations

import pytest

from dbus_ray.acks import Checkpoint, SubmittedBatches


def pos(n: int) -> dict[str, int]:
    return {"offset": n}


def test_checkpoint_is_the_highest_batch_every_sink_acknowledged() -> None:
    book = SubmittedBatches(["a", "b"])
    for n in (1, 2, 3):
        assert book.submit(10, pos(n), ts=100.0 + n) == n
    assert book.rows_in_flight == 30
    assert book.ack("a", 3, now=1.0) == 0  # b has nothing yet
    assert book.checkpoint is None
    assert book.ack("b", 2, now=2.0) == 20
    assert book.checkpoint == Checkpoint(pos(2), 2, 2.0)
    assert book.rows_in_flight == 10 and book.rows_delivered == 20 and book.oldest_ts == 103.0
    assert book.ack("b", 1, now=3.0) == 0  # old news
    assert book.ack("b", 3, now=4.0) == 10
    assert book.checkpoint == Checkpoint(pos(3), 3, 4.0) and not book.pending


def test_a_failed_batch_is_never_passed_whatever_arrives_later() -> None:
    book = SubmittedBatches(["kafka", "file"])
    for n in (1, 2, 3, 4):
        book.submit(1, pos(n), ts=0.0)
    book.ack("kafka", 1, now=1.0)
    book.ack("file", 4, now=1.0)
    book.fail("kafka", 2, "message too large")
    assert book.ack("kafka", 4, now=2.0) == 0  # a writer that went on after its failure: ignored
    assert book.ack("kafka", 3, now=2.0) == 0
    assert book.checkpoint == Checkpoint(pos(1), 1, 1.0)
    assert book.to_save() == Checkpoint(pos(1), 1, 1.0)


def test_failure_reported_before_an_earlier_ack_still_counts_that_ack() -> None:
    book = SubmittedBatches(["k"])
    for n in (1, 2, 3):
        book.submit(1, pos(n), ts=0.0)
    book.fail("k", 3, "boom")  # batch 3 failed; the ack of 2 is still on its way
    assert book.ack("k", 2, now=5.0) == 2
    assert book.checkpoint == Checkpoint(pos(2), 2, 5.0)
    assert book.ack("k", 3, now=6.0) == 0


def test_failure_is_never_before_what_was_acknowledged() -> None:
    book = SubmittedBatches(["k"])
    for n in (1, 2):
        book.submit(1, pos(n), ts=0.0)
    book.ack("k", 2, now=1.0)
    book.fail("k", 1, "late report")
    assert book.failed["k"][0] == 3


def test_batches_without_a_position_do_not_move_the_checkpoint() -> None:
    book = SubmittedBatches(["k"], start=Checkpoint(pos(0), 7, 0.5))
    assert book.submit(1, None, ts=0.0) == 1  # numbering restarts with each reader
    assert book.ack("k", 1, now=1.0) == 1
    assert book.checkpoint == Checkpoint(pos(0), 7, 0.5)
    assert book.to_save() is None  # the store holds it already


def test_idle_follows_the_source_only_with_nothing_in_flight() -> None:
    book = SubmittedBatches(["k"])
    book.submit(1, pos(1), ts=0.0)
    book.idle(pos(5), now=1.0)
    assert book.checkpoint is None
    book.ack("k", 1, now=2.0)
    book.idle(pos(5), now=3.0)
    assert book.checkpoint == Checkpoint(pos(5), 1, 3.0)
    saved = book.to_save()
    book.mark_saved(saved)
    book.idle(pos(5), now=4.0)
    assert book.to_save() is None


def test_bad_acknowledgements_are_refused() -> None:
    book = SubmittedBatches(["k"])
    book.submit(1, pos(1), ts=0.0)
    with pytest.raises(ValueError, match="unknown sink 'x'"):
        book.ack("x", 1, now=0.0)
    with pytest.raises(ValueError, match="acknowledged batch 2, but only 1 were sent"):
        book.ack("k", 2, now=0.0)
    with pytest.raises(ValueError, match="at least one sink"):
        SubmittedBatches([])


def test_checkpoint_round_trip_keeps_the_stored_form() -> None:
    stored = {"source": {"file": "binlog.000001", "offset": 4}, "seq": 3, "time": 1.5, "epoch": 2}
    assert Checkpoint.from_dict(stored).to_dict() == stored
    assert Checkpoint.from_dict(None) is None
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.from_dict({"seq": 1})


def test_delivered_through_ignores_batches_read_later() -> None:
    """Caught up under steady writes: the batches up to the one read when the source was caught up are
    delivered while later ones are still in flight; a resumed book (saved seq 57) counts from 1 again."""
    book = SubmittedBatches(["a", "b"], Checkpoint(pos(0), 57, 0.0))
    assert book.delivered_through(0)
    for n in (1, 2, 3, 4):
        book.submit(1, pos(n), ts=0.0)
    assert not book.delivered_through(2)
    book.ack("a", 4, now=1.0)
    book.ack("b", 1, now=1.0)
    assert book.delivered_through(1) and not book.delivered_through(2)
    book.ack("b", 2, now=1.0)
    assert book.delivered_through(2) and not book.delivered_through(3)
