"""MySQL/MariaDB character sets -> exact decoders: one mapping (`codec_of`), every exception written out.

Every charset `SHOW CHARACTER SET` lists on MariaDB 10.11 has an entry; a charset without one (a newer
server's) refuses its table with one line. Decoding is strict everywhere: a byte sequence the server has no
character for raises, nothing is ever replaced.

- Unicode: utf8/utf8mb3/utf8mb4 are UTF-8; `ucs2`, `utf16` and `utf32` are big-endian (Python's `utf-16`
  and `utf-32` would read a byte-order mark and default to little-endian), `utf16le` little-endian.
- Single-byte charsets (`SINGLE_BYTE`): a 256-entry decoding table per charset, built from a Python codec
  plus the bytes where the server's mapping differs, or for charsets Python has no codec for (armscii8,
  geostd8) from the written-out upper half. The tables follow the server's own conversion
  (`CONVERT(CAST(UNHEX('..') AS CHAR CHARACTER SET cs) USING utf8mb4)` over bytes 0x00-0xFF on MariaDB
  10.11); a byte it converts to `?` or U+FFFD has no character and raises here.
- Multi-byte charsets (`MULTI_BYTE`): a Python codec, with the sequences where the server differs
  (big5, sjis, ujis, eucjpms) written out; euckr is the server's cp949 (UHC), not plain EUC-KR.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Any

UNDEFINED = "\ufffe"  # a decoding table's "no character here" (as Python's own charmap codecs)

#: single-byte charset -> (Python codec for the bytes not overridden, {byte: the server's character, or None
#: where it has none}) or ("ascii", the 128 characters of bytes 0x80..0xFF, UNDEFINED where none)
SINGLE_BYTE: dict[str, tuple[str, Any]] = {
    "armscii8": ("ascii", (  # 0x80..0xFF
        "\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f"
        "\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f"
        "\xa0\u2741\xa7\u0589)(\xbb\xab\u2014.\u055d,-\u055f\u2026\u055c"
        "\u055b\u055e\u0531\u0561\u0532\u0562\u0533\u0563\u0534\u0564\u0535\u0565\u0536\u0566\u0537\u0567"
        "\u0538\u0568\u0539\u0569\u053a\u056a\u053b\u056b\u053c\u056c\u053d\u056d\u053e\u056e\u053f\u056f"
        "\u0540\u0570\u0541\u0571\u0542\u0572\u0543\u0573\u0544\u0574\u0545\u0575\u0546\u0576\u0547\u0577"
        "\u0548\u0578\u0549\u0579\u054a\u057a\u054b\u057b\u054c\u057c\u054d\u057d\u054e\u057e\u054f\u057f"
        "\u0550\u0580\u0551\u0581\u0552\u0582\u0553\u0583\u0554\u0584\u0555\u0585\u0556\u0586\u2019'"
    )),
    "ascii": ("ascii", {}),
    "cp1250": ("cp1250", {}),
    "cp1251": ("cp1251", {}),
    "cp1256": ("cp1256", {0x8A: None, 0x8F: None, 0x98: None, 0x9A: None, 0x9F: None, 0xAA: None, 0xC0: None,
        0xFF: None}),
    "cp1257": ("cp1257", {}),
    "cp850": ("cp850", {}),
    "cp852": ("cp852", {}),
    "cp866": ("cp866", {0xFC: '\u207f', 0xFD: '\xb2'}),
    "dec8": ("latin-1", {0xA4: None, 0xA6: None, 0xA8: '\xa4', 0xAC: None, 0xAD: None, 0xAE: None, 0xAF: None,
        0xB4: None, 0xB8: None, 0xBE: None, 0xD0: None, 0xD7: '\u0152', 0xDD: '\u0178', 0xDE: None, 0xF0: None,
        0xF7: '\u0153', 0xFD: '\xff', 0xFE: None, 0xFF: None}),
    "geostd8": ("ascii", (  # 0x80..0xFF
        "\u20ac\ufffe\u201a\ufffe\u201e\u2026\u2020\u2021\ufffe\u2030\ufffe\u2039\ufffe\ufffe\ufffe\ufffe"
        "\ufffe\u2018\u2019\u201c\u201d\u2022\u2013\u2014\ufffe\ufffe\ufffe\u203a\ufffe\ufffe\ufffe\ufffe"
        "\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf"
        "\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf"
        "\u10d0\u10d1\u10d2\u10d3\u10d4\u10d5\u10d6\u10f1\u10d7\u10d8\u10d9\u10da\u10db\u10dc\u10f2\u10dd"
        "\u10de\u10df\u10e0\u10e1\u10e2\u10f3\u10e3\u10e4\u10e5\u10e6\u10e7\u10e8\u10e9\u10ea\u10eb\u10ec"
        "\u10ed\u10ee\u10f4\u10ef\u10f0\u10f5\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe"
        "\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\ufffe\u2116\ufffe\ufffe"
    )),
    "greek": ("iso8859-7", {0xA1: '\u02bd', 0xA2: '\u02bc', 0xA4: None, 0xA5: None, 0xAA: None}),
    "hebrew": ("iso8859-8", {0xAF: '\u203e'}),
    "hp8": ("hp-roman8", {}),
    "keybcs2": ("cp437", {0x80: '\u010c', 0x83: '\u010f', 0x85: '\u010e', 0x86: '\u0164', 0x87: '\u010d',
        0x88: '\u011b', 0x89: '\u011a', 0x8A: '\u0139', 0x8B: '\xcd', 0x8C: '\u013e', 0x8D: '\u013a', 0x8F: '\xc1',
        0x91: '\u017e', 0x92: '\u017d', 0x95: '\xd3', 0x96: '\u016f', 0x97: '\xda', 0x98: '\xfd', 0x9B: '\u0160',
        0x9C: '\u013d', 0x9D: '\xdd', 0x9E: '\u0158', 0x9F: '\u0165', 0xA4: '\u0148', 0xA5: '\u0147',
        0xA6: '\u016e', 0xA7: '\xd4', 0xA8: '\u0161', 0xA9: '\u0159', 0xAA: '\u0155', 0xAB: '\u0154'}),
    "koi8r": ("koi8-r", {}),
    "koi8u": ("koi8-u", {0x95: '\u2022'}),
    "latin1": ("cp1252", {0x81: '\x81', 0x8D: '\x8d', 0x8F: '\x8f', 0x90: '\x90', 0x9D: '\x9d'}),
    "latin2": ("iso8859-2", {}),
    "latin5": ("iso8859-9", {}),
    "latin7": ("iso8859-13", {}),
    "macce": ("mac-latin2", {}),
    "macroman": ("mac-roman", {}),
    "swe7": ("ascii", {0x40: '\xc9', 0x5B: '\xc4', 0x5C: '\xd6', 0x5D: '\xc5', 0x5E: '\xdc', 0x60: '\xe9',
        0x7B: '\xe4', 0x7C: '\xf6', 0x7D: '\xe5', 0x7E: '\xfc', 0x7F: None}),
    "tis620": ("tis-620", {}),}


def _table(codec: str, overrides: Any) -> str:
    chars = []
    for b in range(256):
        try:
            chars.append(bytes([b]).decode(codec))
        except UnicodeDecodeError:
            chars.append(UNDEFINED)
    if isinstance(overrides, str):
        chars[128:] = overrides
    else:
        for b, c in overrides.items():
            chars[b] = UNDEFINED if c is None else c
    assert len(chars) == 256
    return "".join(chars)


_TABLES = {name: _table(codec, over) for name, (codec, over) in SINGLE_BYTE.items()}


def _ujis_user_defined() -> dict[bytes, str]:
    """EUC-JP's user-defined rows 0xF5..0xFE (two bytes, and three after 0x8F) -> the Private Use Area as the
    server maps them: U+E000.. and U+E3AC.., 94 characters a row."""
    out = {}
    for row in range(0xF5, 0xFF):
        for cell in range(0xA1, 0xFF):
            n = (row - 0xF5) * 94 + cell - 0xA1
            out[bytes([row, cell])] = chr(0xE000 + n)
            out[bytes([0x8F, row, cell])] = chr(0xE3AC + n)
    return out


#: eucjpms: ujis plus NEC row 13 (0xADxx), IBM extensions (0x8F 0xF3F3..0xF4FE) and a few signs mapped to
#: their fullwidth forms: (first sequence, the characters of it and the sequences after it in its row)
_EUCJPMS_RUNS = (
    (b"\x8f\xa2\xb7", "\uff5e"),
    (b"\x8f\xa2\xc3", "\uffe4"),
    (b"\x8f\xf3\xf3", "\u2170\u2171\u2172\u2173\u2174\u2175\u2176\u2177\u2178\u2179\u2160\u2161"),
    (b"\x8f\xf4\xa1", (
        "\u2162\u2163\u2164\u2165\u2166\u2167\u2168\u2169\uff07\uff02\u3231\u2116\u2121\u70bb"
        "\u4efc\u50f4\u51ec\u5307\u5324\ufa0e\u548a\u5759\ufa0f\ufa10\u589e\u5bec\u5cf5\u5d53"
        "\ufa11\u5fb7\u6085\u6120\u654e\u663b\u6665\ufa12\uf929\u6801\ufa13\ufa14\u6a6b\u6ae2"
        "\u6df8\u6df2\u7028\ufa15\ufa16\u7501\u7682\u769e\ufa17\u7930\ufa18\ufa19\ufa1a\ufa1b"
        "\u7ae7\ufa1c\ufa1d\u7da0\u7dd6\ufa1e\u8362\ufa1f\u85b0\ufa20\ufa21\u8807\ufa22\u8b7f"
        "\u8cf4\u8d76\ufa23\ufa24\ufa25\u90de\ufa26\u9115\ufa27\ufa28\u9592\uf9dc\ufa29\u973b"
        "\u974d\u9751\ufa2a\ufa2b\ufa2c\u999e\u9ad9\u9b72\ufa2d\u9ed1"
    )),
    (b"\xa1\xc0", "\uff3c\uff5e\u2225"),
    (b"\xa1\xdd", "\uff0d"),
    (b"\xa1\xf1", "\uffe0\uffe1"),
    (b"\xa2\xcc", "\uffe2"),
    (b"\xad\xa1", (
        "\u2460\u2461\u2462\u2463\u2464\u2465\u2466\u2467\u2468\u2469\u246a\u246b\u246c\u246d"
        "\u246e\u246f\u2470\u2471\u2472\u2473\u2160\u2161\u2162\u2163\u2164\u2165\u2166\u2167"
        "\u2168\u2169"
    )),
    (b"\xad\xc0", (
        "\u3349\u3314\u3322\u334d\u3318\u3327\u3303\u3336\u3351\u3357\u330d\u3326\u3323\u332b"
        "\u334a\u333b\u339c\u339d\u339e\u338e\u338f\u33c4\u33a1"
    )),
    (b"\xad\xdf", (
        "\u337b\u301d\u301f\u2116\u33cd\u2121\u32a4\u32a5\u32a6\u32a7\u32a8\u3231\u3232\u3239"
        "\u337e\u337d\u337c\u2252\u2261\u222b\u222e\u2211\u221a\u22a5\u2220\u221f\u22bf\u2235"
        "\u2229\u222a"
    )),
)


def _runs(runs: tuple[tuple[bytes, str], ...]) -> dict[bytes, str]:
    return {start[:-1] + bytes([start[-1] + i]): c for start, chars in runs for i, c in enumerate(chars)}


#: multi-byte charset -> (Python codec, one character's byte pattern, {sequence: the server's character, or
#: None where it has none} where the codec differs from the server)
MULTI_BYTE: dict[str, tuple[str, bytes, dict[bytes, str | None]]] = {
    "big5": ("big5", rb"[\x81-\xfe][\x40-\xfe]|[\x00-\xff]", {
        b"\xf9\xd6": "\u7881", b"\xf9\xd7": "\u92b9", b"\xf9\xd8": "\u88cf", b"\xf9\xd9": "\u58bb",
        b"\xf9\xda": "\u6052", b"\xf9\xdb": "\u7ca7", b"\xf9\xdc": "\u5afa",
        b"\xa1\x5a": None, b"\xa1\xc3": None, b"\xa1\xc5": None, b"\xa1\xfe": None, b"\xa2\x40": None,
        b"\xa2\xcc": None, b"\xa2\xce": None}),
    "sjis": ("shift_jis", rb"[\x81-\x9f\xe0-\xfc][\x40-\xfc]|[\x00-\xff]", {b"\x81\x5f": "\\"}),
    "ujis": ("euc-jp", rb"\x8f[\xa1-\xfe][\xa1-\xfe]|[\x8e\xa1-\xfe][\xa1-\xfe]|[\x00-\xff]",
             {b"\xa1\xc0": "\\", **_ujis_user_defined()}),
    "eucjpms": ("euc-jp", rb"\x8f[\xa1-\xfe][\xa1-\xfe]|[\x8e\xa1-\xfe][\xa1-\xfe]|[\x00-\xff]",
                {b"\xa1\xc0": "\\", **_ujis_user_defined(), **_runs(_EUCJPMS_RUNS)}),
    "cp932": ("cp932", b"", {}), "euckr": ("cp949", b"", {}), "gbk": ("gbk", b"", {}),
    "gb2312": ("gb2312", b"", {}),
}

#: the rest: MySQL charset -> Python codec, exact as it is
CODECS = {
    "utf8": "utf-8", "utf8mb3": "utf-8", "utf8mb4": "utf-8",
    "ucs2": "utf-16-be", "utf16": "utf-16-be", "utf16le": "utf-16-le", "utf32": "utf-32-be",
}


def codec_of(charset_name: str | None, collation: str | None) -> str:
    """The decoder name (for `decode_text`/`decoder`) of a column's charset: "binary", a Python codec, or
    "mysql-<charset>" for the table-driven ones. The charset is taken from the collation's name when
    there is one (python-mysql-replication renames charsets after Python codecs: koi8r -> koi8_r). Raises
    ValueError (one line) for a charset without an exact decoder, and when neither is known (never UTF-8 by
    default: call it for character columns only)."""
    if collation == "binary" or charset_name == "binary":
        return "binary"
    name = collation.split("_")[0] if collation else charset_name
    if name is None:
        raise ValueError("the column's character set is unknown (the binlog does not carry it): set "
                         "binlog_row_metadata=FULL on the server")
    if name in _TABLES or name in MULTI_BYTE and MULTI_BYTE[name][2]:
        return f"mysql-{name}"
    if name in MULTI_BYTE:
        return MULTI_BYTE[name][0]
    codec = CODECS.get(name)
    if codec is None:
        raise ValueError(f"character set {name} has no exact decoder in dbus-ray: leave the table out "
                         "(source.exclude) or convert the column to utf8mb4")
    return codec


def _multi_byte(codec: str, pattern: bytes, overrides: dict[bytes, str | None]) -> Callable[[bytes], str]:
    chars = re.compile(pattern)

    def decode(raw: bytes) -> str:
        out = []
        for m in chars.finditer(raw):
            seq = m.group()
            if seq in overrides:
                c = overrides[seq]
                if c is None:
                    raise UnicodeDecodeError(codec, bytes(raw), m.start(), m.end(), "no character in the server's map")
                out.append(c)
            else:
                out.append(seq.decode(codec))
        return "".join(out)

    return decode


def _single_byte(table: str) -> Callable[[bytes], str]:
    def decode(raw: bytes) -> str:
        return codecs.charmap_decode(raw, "strict", table)[0]

    return decode


_DECODERS: dict[str, Callable[[bytes], str]] = {f"mysql-{name}": _single_byte(t) for name, t in _TABLES.items()}
_DECODERS.update({f"mysql-{name}": _multi_byte(*spec) for name, spec in MULTI_BYTE.items() if spec[2]})


def decoder(codec: str) -> Callable[[bytes], Any]:
    """Bytes -> value of a column whose `codec_of` is `codec`; strict: bytes it cannot decode raise
    UnicodeDecodeError (a ValueError)."""
    if codec == "binary":
        return bytes
    hit = _DECODERS.get(codec)
    if hit is not None:
        return hit
    return lambda b: b.decode(codec)


def decode_text(raw: bytes, codec: str) -> str:
    """`raw` in `codec` (from `codec_of`, not "binary"), strictly."""
    return decoder(codec)(raw)
