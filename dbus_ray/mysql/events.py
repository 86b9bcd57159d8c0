"""Every binlog event type a MySQL (5.7, 8.x, 9.x) or MariaDB (10.x, 11.x) server writes, classified in
one table (`EVENT_TYPES`): DECODED (the stream reads it), IGNORED (it carries no row change; the reason
is written next to it) or REFUSED (the stream cannot read it correctly: the pipeline stops at it with one
line naming the event, its `FILE:OFFSET` and the server setting behind it, and the checkpoint stays
before it). A type not in the table (a newer server) is refused the same way. Nothing is skipped
silently.

Numbers: MySQL `libbinlogevents/include/binlog_event.h` (`Log_event_type`), MariaDB
`sql/log_event.h` (160 and up).
"""

from __future__ import annotations

from dataclasses import dataclass

from dbus_ray.errors import DbusError

DECODED, IGNORED, REFUSED = "decoded", "ignored", "refused"

QUERY_EVENT = 2
ROTATE_EVENT = 4
XID_EVENT = 16
TABLE_MAP_EVENT = 19
WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1 = 23, 24, 25
HEARTBEAT_EVENT = 27
WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2 = 30, 31, 32
GTID_EVENT = 33
PREVIOUS_GTIDS_EVENT = 35
XA_PREPARE_EVENT = 38
PARTIAL_UPDATE_ROWS = 39
TRANSACTION_PAYLOAD_EVENT = 40
HEARTBEAT_EVENT_V2 = 41
MARIADB_GTID_EVENT = 162
QUERY_COMPRESSED_EVENT = 165
WRITE_ROWS_COMPRESSED_V1, UPDATE_ROWS_COMPRESSED_V1, DELETE_ROWS_COMPRESSED_V1 = 166, 167, 168
WRITE_ROWS_COMPRESSED, UPDATE_ROWS_COMPRESSED, DELETE_ROWS_COMPRESSED = 169, 170, 171

ROWS_OP = {
    WRITE_ROWS_V1: "insert", UPDATE_ROWS_V1: "update", DELETE_ROWS_V1: "delete",
    WRITE_ROWS_V2: "insert", UPDATE_ROWS_V2: "update", DELETE_ROWS_V2: "delete",
    WRITE_ROWS_COMPRESSED_V1: "insert", UPDATE_ROWS_COMPRESSED_V1: "update", DELETE_ROWS_COMPRESSED_V1: "delete",
    WRITE_ROWS_COMPRESSED: "insert", UPDATE_ROWS_COMPRESSED: "update", DELETE_ROWS_COMPRESSED: "delete",
    PARTIAL_UPDATE_ROWS: "update",
}
#: rows events with a variable-size extra header after the flags
ROWS_V2 = frozenset((WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2, WRITE_ROWS_COMPRESSED, UPDATE_ROWS_COMPRESSED,
                     DELETE_ROWS_COMPRESSED, PARTIAL_UPDATE_ROWS))
#: rows events with a before and an after image per row (two column bitmaps)
ROWS_UPDATE = frozenset((UPDATE_ROWS_V1, UPDATE_ROWS_V2, UPDATE_ROWS_COMPRESSED_V1, UPDATE_ROWS_COMPRESSED,
                         PARTIAL_UPDATE_ROWS))
#: rows events whose row images are one compressed record (MariaDB log_bin_compress)
ROWS_COMPRESSED = frozenset((WRITE_ROWS_COMPRESSED_V1, UPDATE_ROWS_COMPRESSED_V1, DELETE_ROWS_COMPRESSED_V1,
                             WRITE_ROWS_COMPRESSED, UPDATE_ROWS_COMPRESSED, DELETE_ROWS_COMPRESSED))
QUERIES = frozenset((QUERY_EVENT, QUERY_COMPRESSED_EVENT))
HEARTBEATS = frozenset((HEARTBEAT_EVENT, HEARTBEAT_EVENT_V2))

_STATEMENT = "binlog_format=STATEMENT or MIXED (the source needs ROW)"


@dataclass(frozen=True, slots=True)
class EventType:
    code: int
    name: str
    kind: str  # DECODED | IGNORED | REFUSED
    why: str  # IGNORED: why it carries no row change; REFUSED: what it is and the server setting behind it


def _table(*rows: tuple[int, str, str, str]) -> dict[int, EventType]:
    return {code: EventType(code, name, kind, why) for code, name, kind, why in rows}


EVENT_TYPES: dict[int, EventType] = _table(
    (0, "UNKNOWN_EVENT", REFUSED, "an event the server itself marks as unknown"),
    (1, "START_EVENT_V3", IGNORED, "the file header of binlog format v3 (MySQL 4): no data"),
    (QUERY_EVENT, "QUERY_EVENT", DECODED, "BEGIN/COMMIT and DDL statements"),
    (3, "STOP_EVENT", IGNORED, "the server stopped; the next file follows"),
    (ROTATE_EVENT, "ROTATE_EVENT", DECODED, "the next binlog file"),
    (5, "INTVAR_EVENT", IGNORED, "AUTO_INCREMENT/LAST_INSERT_ID context of the next statement (rows carry values)"),
    (6, "LOAD_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (7, "SLAVE_EVENT", REFUSED, "a never-written legacy event"),
    (8, "CREATE_FILE_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (9, "APPEND_BLOCK_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (10, "EXEC_LOAD_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (11, "DELETE_FILE_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (12, "NEW_LOAD_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (13, "RAND_EVENT", IGNORED, "RAND() seed of the next statement (rows carry values)"),
    (14, "USER_VAR_EVENT", IGNORED, "a user variable the next statement reads (rows carry values)"),
    (15, "FORMAT_DESCRIPTION_EVENT", IGNORED, "the file header (server version, header sizes, checksum)"),
    (XID_EVENT, "XID_EVENT", DECODED, "the commit of a transaction"),
    (17, "BEGIN_LOAD_QUERY_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (18, "EXECUTE_LOAD_QUERY_EVENT", REFUSED, f"statement-based LOAD DATA: {_STATEMENT}"),
    (TABLE_MAP_EVENT, "TABLE_MAP_EVENT", DECODED, "the table definition of the next rows events"),
    (20, "PRE_GA_WRITE_ROWS_EVENT", REFUSED, "rows event of MySQL 5.1 before GA"),
    (21, "PRE_GA_UPDATE_ROWS_EVENT", REFUSED, "rows event of MySQL 5.1 before GA"),
    (22, "PRE_GA_DELETE_ROWS_EVENT", REFUSED, "rows event of MySQL 5.1 before GA"),
    (WRITE_ROWS_V1, "WRITE_ROWS_EVENT_V1", DECODED, "inserted rows"),
    (UPDATE_ROWS_V1, "UPDATE_ROWS_EVENT_V1", DECODED, "updated rows"),
    (DELETE_ROWS_V1, "DELETE_ROWS_EVENT_V1", DECODED, "deleted rows"),
    (26, "INCIDENT_EVENT", REFUSED, "the server lost changes here (an incident: the binlog is incomplete)"),
    (HEARTBEAT_EVENT, "HEARTBEAT_LOG_EVENT", DECODED, "no event for a while (the stream is idle)"),
    (28, "IGNORABLE_LOG_EVENT", IGNORED, "marked ignorable by the server"),
    (29, "ROWS_QUERY_LOG_EVENT", IGNORED, "the SQL text of the next rows events (binlog_rows_query_log_events)"),
    (WRITE_ROWS_V2, "WRITE_ROWS_EVENT", DECODED, "inserted rows"),
    (UPDATE_ROWS_V2, "UPDATE_ROWS_EVENT", DECODED, "updated rows"),
    (DELETE_ROWS_V2, "DELETE_ROWS_EVENT", DECODED, "deleted rows"),
    (GTID_EVENT, "GTID_LOG_EVENT", DECODED, "the GTID of the next transaction"),
    (34, "ANONYMOUS_GTID_LOG_EVENT", IGNORED, "a transaction start without GTID (gtid_mode=OFF; BEGIN follows)"),
    (PREVIOUS_GTIDS_EVENT, "PREVIOUS_GTIDS_LOG_EVENT", DECODED,
     "the GTIDs of the earlier files (MySQL: the executed GTID set where the stream starts a file)"),
    (36, "TRANSACTION_CONTEXT_EVENT", IGNORED, "group replication certification data"),
    (37, "VIEW_CHANGE_EVENT", IGNORED, "group replication membership change"),
    (XA_PREPARE_EVENT, "XA_PREPARE_LOG_EVENT", DECODED,
     "XA PREPARE: the end of a prepared XA transaction's group (its rows wait for XA COMMIT)"),
    (PARTIAL_UPDATE_ROWS, "PARTIAL_UPDATE_ROWS_EVENT", DECODED,
     "updated rows whose JSON after values are diffs (binlog_row_value_options=PARTIAL_JSON), applied to the before "
     "values"),
    (TRANSACTION_PAYLOAD_EVENT, "TRANSACTION_PAYLOAD_EVENT", DECODED,
     "a compressed transaction (binlog_transaction_compression=ON): its inner events are decoded"),
    (HEARTBEAT_EVENT_V2, "HEARTBEAT_LOG_EVENT_V2", DECODED, "no event for a while (the stream is idle)"),
    (42, "GTID_TAGGED_LOG_EVENT", REFUSED, "GTID with a tag (MySQL 8.4+ tagged GTIDs): use untagged GTIDs"),
    (160, "ANNOTATE_ROWS_EVENT", IGNORED, "the SQL text of the next rows events (binlog_annotate_row_events)"),
    (161, "BINLOG_CHECKPOINT_EVENT", IGNORED, "MariaDB crash-recovery checkpoint"),
    (MARIADB_GTID_EVENT, "GTID_EVENT", DECODED, "the MariaDB GTID (and BEGIN) of the next transaction"),
    (163, "GTID_LIST_EVENT", IGNORED, "the MariaDB GTID state at the start of the file"),
    (164, "START_ENCRYPTION_EVENT", IGNORED, "binlog encryption starts (a replica receives the events decrypted)"),
    (QUERY_COMPRESSED_EVENT, "QUERY_COMPRESSED_EVENT", DECODED, "a QUERY_EVENT compressed (log_bin_compress=ON)"),
    (WRITE_ROWS_COMPRESSED_V1, "WRITE_ROWS_COMPRESSED_EVENT_V1", DECODED, "inserted rows (log_bin_compress=ON)"),
    (UPDATE_ROWS_COMPRESSED_V1, "UPDATE_ROWS_COMPRESSED_EVENT_V1", DECODED, "updated rows (log_bin_compress=ON)"),
    (DELETE_ROWS_COMPRESSED_V1, "DELETE_ROWS_COMPRESSED_EVENT_V1", DECODED, "deleted rows (log_bin_compress=ON)"),
    (WRITE_ROWS_COMPRESSED, "WRITE_ROWS_COMPRESSED_EVENT", DECODED, "inserted rows (log_bin_compress=ON)"),
    (UPDATE_ROWS_COMPRESSED, "UPDATE_ROWS_COMPRESSED_EVENT", DECODED, "updated rows (log_bin_compress=ON)"),
    (DELETE_ROWS_COMPRESSED, "DELETE_ROWS_COMPRESSED_EVENT", DECODED, "deleted rows (log_bin_compress=ON)"),
)

class RefusedEvent(DbusError):
    """The stream reached an event it cannot read (it hands out the rows before it, then stops)."""


DECODED_TYPES = frozenset(c for c, e in EVENT_TYPES.items() if e.kind == DECODED)
IGNORED_TYPES = frozenset(c for c, e in EVENT_TYPES.items() if e.kind == IGNORED)


def refused(code: int, file: str, offset: int) -> RefusedEvent:
    """The one-line error of an event the stream cannot read (a REFUSED or unknown type) at `file:offset`."""
    known = EVENT_TYPES.get(code)
    if known is None:
        what = f"event type {code} (unknown to this version of dbus)"
        why = "a server newer than the source, or a corrupt binlog"
    else:
        what, why = f"event type {code} {known.name}", known.why
    return RefusedEvent(f"binlog {file}:{offset}: {what} cannot be read: {why}; the pipeline stops before it")

