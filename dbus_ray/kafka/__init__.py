"""Kafka helpers shared by the `kafka` source, the `kafka` sink and checkpoint store `kafka`:

- `client`: the librdkafka settings of every producer and admin client (built in one place), topic-name
  checks, topic lookup and creation, one-line reasons of Kafka errors;
- `key_columns`: the `kafka` sink's `key` checked against each table's columns (one line naming the missing);
- `checkpoints`: checkpoint store `kafka` (the checkpoint as a record of a compacted topic);
- `log`: a partition's log read as the broker stores it, with the `read_committed` rules applied client-side;
- `raw`: Kafka messages as table runs, for mirroring (source `kafka` -> sink `kafka` with `format: raw`).
"""
