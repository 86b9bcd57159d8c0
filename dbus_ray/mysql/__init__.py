"""The `mysql` source: a MySQL/MariaDB binlog read as a replica. One concept per module:

- `source`: `MysqlSource`, the registered `mysql` source; it only coordinates (snapshot or stream).
- `options`: the config keys, the DSN and the `start` forms.
- `connection`: connecting, the preflight checks at open, binlog positions, `server_id: auto`.
- `offset`: `BinlogOffset`, the checkpoint (its JSON form), and the order of binlog positions.
- `replica`: the binlog connection (replica session and packet loop) and the raw event slices.
- `files`, `file_schema`: binlog files read from disk as the stream's events, and their table definitions (the
  `binlog_files` source in `dbus_ray.sources`, and `history(files=)`).
- `events`: every binlog event type, classified: decoded, ignored (with the reason) or refused.
- `streaming`: `BinlogStream`, events -> transactions -> pending rows -> batches; reconnects.
- `gtid_set`: MySQL GTID sets (the executed set of a checkpoint, COM_BINLOG_DUMP_GTID auto-position).
- `xa`: XA transactions: prepared rows held until XA COMMIT, dropped at XA ROLLBACK, re-read on resume.
- `schema`, `schema_history`: table definitions over time (TABLE_MAP, history, information_schema).
- `values`, `decoder`: column values per MySQL type, and the compiled row decoder (`Layout`).
- MySQL 8 formats: `json_binary` (binary JSON -> MySQL's JSON text), `payload` (TRANSACTION_PAYLOAD_EVENT, zstd),
  `partial` and `json_diff` (PARTIAL_UPDATE_ROWS_EVENT: JSON diffs applied to the before value).
- `batches`: pending row segments and their Arrow record batches.
- `ddl`: the DDL statements understood, online-schema-change shadow tables, the DDL row image.
- `snapshot/`: `catalog` (tables, keys, queries), `serial`, `parallel` (worker actors, fences) and
  `backfill` (on-demand, interleaved with the stream).
"""
