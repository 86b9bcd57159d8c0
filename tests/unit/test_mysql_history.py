"""The GTID state forms of `dbus_ray.mysql.history` and the checkpoint keys that carry them."""

from __future__ import annotations

import pytest

from dbus_ray.mysql.history import binlog_refusal, format_state, missing_from, parse_state, same_state
from dbus_ray.mysql.offset import BinlogOffset


def test_parse_and_format_a_mariadb_gtid_state() -> None:
    assert parse_state("") == {} and parse_state(None) == {}
    assert parse_state("0-1-202") == {"0": "0-1-202"}
    state = parse_state("10-2-7, 0-1-202")
    assert state == {"10": "10-2-7", "0": "0-1-202"}
    assert format_state(state) == "0-1-202,10-2-7"  # by domain, as BINLOG_GTID_POS lists them
    for bad in ("0-1", "a-1-2", "3e4a5c1e-1111-2222-3333-444455556666:1-5", "0-1-2-3"):
        with pytest.raises(ValueError, match="expected DOMAIN-SERVER-SEQ"):
            parse_state(bad)


def test_same_state_ignores_order_and_needs_both() -> None:
    assert same_state("0-1-5,1-2-3", "1-2-3,0-1-5")
    assert not same_state("0-1-5", "0-1-6")
    assert not same_state("0-1-5", "0-2-5")  # same seq written by another server: another history
    assert same_state("", "")
    assert not same_state(None, "") and not same_state("", None)


def test_missing_from_a_history() -> None:
    assert missing_from("0-2-362", "0-1-202") == []  # a promoted replica went on in the same domain
    assert missing_from("0-3-5", "0-1-202") == ["0-1-202"]  # behind
    assert missing_from("", "0-1-202") == ["0-1-202"]  # RESET MASTER
    assert missing_from("0-2-362", "0-1-202,1-1-9") == ["1-1-9"]  # a domain it never had
    assert missing_from("0-1-1", "") == []


def test_checkpoint_keys_round_trip_and_old_checkpoints_load() -> None:
    cp = BinlogOffset("binlog.000003", 4567, 2, "0-1-203", gtid_pos="0-1-202", server="1")
    d = cp.to_dict()
    assert list(d) == ["file", "offset", "skip", "gtid", "gtid_pos", "server"]
    assert BinlogOffset.from_dict(d) == cp
    old = BinlogOffset.from_dict({"file": "binlog.000003", "offset": 4567, "skip": 0, "gtid": "0-1-203"})
    assert (old.gtid_pos, old.server) == (None, None)
    assert set(old.to_dict()) == {"file", "offset", "skip", "gtid"}
    assert BinlogOffset.from_dict({**d, "gtid_pos": "", "server": 7}).to_dict()["gtid_pos"] == ""  # empty state kept
    assert BinlogOffset.from_dict({**d, "server": 7}).server == "7"


def test_refusals_are_one_line_with_the_fix() -> None:
    cp = BinlogOffset("binlog.000001", 46799, 0, "0-1-202", gtid_pos="0-1-202", server="1")
    text = str(binlog_refusal("Error: connecting slave requested to start from GTID 0-1-202, which is not in the "
                              "master's binlog. Since the master's binlog contains ...", "db:3306", "3", "", 4, cp,
                              "0-1-202"))
    assert text.startswith("db:3306 (server 3) cannot resume by GTID after 0-1-202 (the checkpoint's state, taken "
                           "on server 1): Error: connecting slave requested to start from GTID 0-1-202")
    assert "Since" not in text and "dbus checkpoint set" in text and "\n" not in text
    text = str(binlog_refusal("log event entry exceeded max_allowed_packet; Increase max_allowed_packet on master",
                              "db:3306", "1", "binlog.000001", 46799, None, None))
    assert "binlog.000001:46799" in text and "not an event boundary" in text and "dbus checkpoint set" in text
