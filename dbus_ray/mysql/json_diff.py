"""MySQL 8 partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`): the JSON diffs of a
PARTIAL_UPDATE_ROWS_EVENT's after image applied to the column's before value give its full after value, as the
server computed it (`sql/json_diff.cc` apply_json_diff).

A diff (`Json_diff::write_binary`): operation byte (0 REPLACE, 1 INSERT, 2 REMOVE), packed path length and the
path text (`$.a."b c"[2]`, `[last]`, `[last-1]`), then, except for REMOVE, packed value length and the value in
binary JSON. A column's diff vector: 4-byte length, then the diffs.

REPLACE replaces the value at the path (which must exist); INSERT adds an object member (which must not exist) or
inserts into an array at the index (an index past the end appends); REMOVE removes a member or element. A diff the
server would reject (no such path) is corrupt input here: ValueError.

The value is worked on as a small DOM of the JSON text (numbers kept as MySQL printed them), printed back as
MySQL prints a document: object keys in MySQL's order (length, then bytes), `", "` and `": "`.
"""

from __future__ import annotations

import json
from typing import Any

from dbus_ray.mysql.json_binary import quote, to_text

REPLACE, INSERT, REMOVE = 0, 1, 2
_DECODER = json.JSONDecoder()


class Num(str):
    """A JSON number, as MySQL printed it."""


def parse(text: str) -> Any:
    """MySQL JSON text -> DOM (dict/list/str/Num/True/False/None)."""
    return json.loads(text, parse_int=Num, parse_float=Num)


def dump(v: Any) -> str:
    """DOM -> MySQL's JSON text."""
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(quote(k) + ": " + dump(v[k]) for k in keys) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(dump(x) for x in v) + "]"
    if isinstance(v, Num):
        return str.__str__(v)
    if isinstance(v, str):
        return quote(v)
    if v is None:
        return "null"
    return "true" if v else "false"


def parse_path(path: str) -> list[Any]:
    """`$.a."b c"[2][last-1]` -> ["a", "b c", 2, ("last", 1)]."""
    if not path.startswith("$"):
        raise ValueError(f"JSON path {path!r} does not start with $")
    legs: list[Any] = []
    i, n = 1, len(path)
    while i < n:
        c = path[i]
        if c.isspace():
            i += 1
        elif c == ".":
            i += 1
            if i < n and path[i] == '"':
                name, i = _DECODER.raw_decode(path, i)
                legs.append(name)
            else:
                j = i
                while j < n and path[j] not in ".[" and not path[j].isspace():
                    j += 1
                if j == i:
                    raise ValueError(f"JSON path {path!r}: empty member name")
                legs.append(path[i:j])
                i = j
        elif c == "[":
            j = path.find("]", i)
            if j < 0:
                raise ValueError(f"JSON path {path!r}: unclosed [")
            cell = path[i + 1 : j].replace(" ", "")
            if cell.startswith("last"):
                legs.append(("last", int(cell[5:]) if cell[4:5] == "-" else 0))
            else:
                legs.append(int(cell))
            i = j + 1
        else:
            raise ValueError(f"JSON path {path!r}: unexpected {c!r}")
    return legs


def _index(leg: Any, size: int) -> int:
    """Json_array_index: from the start clamped to `size`, `last-N` from the end (0 when before the start)."""
    if isinstance(leg, tuple):
        return size - 1 - leg[1] if leg[1] < size else 0
    return min(leg, size)


def _seek(dom: Any, legs: list[Any], path: str) -> Any:
    for leg in legs:
        if isinstance(dom, dict) and isinstance(leg, str) and leg in dom:
            dom = dom[leg]
        elif isinstance(dom, list) and not isinstance(leg, str) and _index(leg, len(dom)) < len(dom):
            dom = dom[_index(leg, len(dom))]
        else:
            raise ValueError(f"JSON diff path {path} is not in the before value")
    return dom


def apply(dom: Any, op: int, path: str, value: Any = None) -> Any:
    """The DOM after one diff (containers change in place; the result is the document)."""
    legs = parse_path(path)
    if not legs:
        if op == REPLACE:
            return value
        raise ValueError(f"JSON diff operation {op} on the whole document")
    parent = _seek(dom, legs[:-1], path)
    leg = legs[-1]
    if op == REPLACE:
        _seek(parent, [leg], path)
        if isinstance(parent, dict):
            parent[leg] = value
        else:
            parent[_index(leg, len(parent))] = value
    elif op == INSERT:
        if isinstance(parent, dict) and isinstance(leg, str):
            if leg in parent:
                raise ValueError(f"JSON diff INSERT at {path}: the member exists")
            parent[leg] = value
        elif isinstance(parent, list) and not isinstance(leg, str):
            parent.insert(_index(leg, len(parent)), value)
        else:
            raise ValueError(f"JSON diff INSERT at {path}: no object or array there")
    elif op == REMOVE:
        _seek(parent, [leg], path)
        if isinstance(parent, dict):
            del parent[leg]
        else:
            del parent[_index(leg, len(parent))]
    else:
        raise ValueError(f"unknown JSON diff operation {op}")
    return dom


def _packed(buf: bytes, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    size = {252: 2, 253: 3, 254: 8}.get(first)
    if size is None:
        raise ValueError(f"bad packed length byte {first:#x}")
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def diffs(vector: bytes) -> list[tuple[int, str, str | None]]:
    """(operation, path, value as MySQL JSON text or None) of each diff of a diff vector (without its length)."""
    out = []
    pos = 0
    while pos < len(vector):
        op = vector[pos]
        if op > REMOVE:
            raise ValueError(f"unknown JSON diff operation {op}")
        n, pos = _packed(vector, pos + 1)
        if pos + n > len(vector):
            raise ValueError("JSON diff path past the end of the diff vector")
        path = vector[pos : pos + n].decode("utf-8")
        pos += n
        value = None
        if op != REMOVE:
            n, pos = _packed(vector, pos)
            if pos + n > len(vector):
                raise ValueError("JSON diff value past the end of the diff vector")
            value = to_text(vector[pos : pos + n])
            pos += n
        out.append((op, path, value))
    return out


def apply_vector(before: str, vector: bytes) -> str:
    """The after value (MySQL JSON text) of a column whose before value is `before` and whose after image holds
    the diff vector `vector`."""
    dom = parse(before)
    for op, path, value in diffs(vector):
        dom = apply(dom, op, path, None if value is None else parse(value))
    return dump(dom)
