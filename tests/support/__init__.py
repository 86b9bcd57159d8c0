"""Test support: `helpers` (waiting, actor pids, SQL), `netfault` (the TCP fault proxy), and the tables,
configs and change checkers several test modules share."""
