"""The `mysql` source's checkpoint (`dbus_ray.mysql.offset.BinlogOffset`): checkpoints written before the
typed offset existed load and serialize to the same JSON bytes; binlog positions order by file number."""

from __future__ import annotations

import json

import pytest

from dbus_ray.mysql.offset import BinlogOffset, is_snapshot, position_key
from dbus_ray.mysql.source import MysqlSource

# Checkpoints as the source wrote them (JSON text, as a checkpoint store keeps them).
OLD_CHECKPOINTS = [
    '{"file": "binlog.000001", "offset": 373582, "skip": 0, "gtid": "0-1-653"}',
    '{"file": "binlog.000042", "offset": 1234, "skip": 3, "gtid": null, "selected": {"include": ["shop.*"], '
    '"exclude": []}}',
    '{"file": "binlog.000002", "offset": 4, "skip": 0, "gtid": "0-1-7", "selected": {"include": ["*.*"], '
    '"exclude": ["s.x"]}, "schema_history": [["s", "t", "binlog.000002", 4, ["id", "v"], ["id"]], '
    '["s", "u", "binlog.000002", 900, null, []]]}',
    '{"file": "binlog.000003", "offset": 256, "skip": 0, "gtid": null, "selected": {"include": ["*.*"], '
    '"exclude": []}, "fences": {"s.t": {"key": ["id"], "at": [[[500], "binlog.000003", 300], '
    '[null, "binlog.000003", 420]]}}}',
]


@pytest.mark.parametrize("text", OLD_CHECKPOINTS)
def test_old_checkpoints_round_trip_byte_for_byte(text: str) -> None:
    offset = BinlogOffset.from_dict(json.loads(text))
    assert json.dumps(offset.to_dict()) == text


def test_fields_of_a_loaded_checkpoint() -> None:
    offset = BinlogOffset.from_dict(json.loads(OLD_CHECKPOINTS[1]))
    assert (offset.file, offset.offset, offset.skip, offset.gtid) == ("binlog.000042", 1234, 3, None)
    assert offset.selected == {"include": ["shop.*"], "exclude": []}
    assert offset.schema_history is None and offset.fences is None


def test_a_checkpoint_without_skip_starts_at_the_transaction() -> None:
    assert BinlogOffset.from_dict({"file": "b.000001", "offset": 4}).skip == 0


def test_positions_order_by_file_number_then_offset() -> None:
    assert position_key("binlog.000010", 4) > position_key("binlog.000009", 99_999)
    assert BinlogOffset("binlog.000002", 5).key < BinlogOffset("binlog.000002", 6).key


def test_typed_position_gives_the_checkpoint_of_the_old_form() -> None:
    assert MysqlSource.parse_position("binlog.000042:1234") == {
        "file": "binlog.000042", "offset": 1234, "skip": 0, "gtid": None
    }
    with pytest.raises(ValueError, match="expected FILE:OFFSET"):
        MysqlSource.parse_position("binlog.000042")


def test_snapshot_checkpoints_are_told_apart() -> None:
    assert is_snapshot({"snapshot": {"tables_done": []}})
    assert not is_snapshot(json.loads(OLD_CHECKPOINTS[0]))
    assert not is_snapshot(None)
