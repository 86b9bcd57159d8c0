"""What several test modules share (imported as `tests.support.<module>`): `helpers` (waiting for states,
actor pids, SQL, metrics, a small disk), `netfault` (the TCP fault proxy), `changes` (a pipeline's JSON
lines and the checks on them), `mysql_types` (the type-fidelity table) and `topics` (reading Kafka topics
and their transaction markers)."""
