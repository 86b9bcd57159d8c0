"""Source `mysql`: reads a MySQL/MariaDB binlog as a replica and emits row changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from dbus_ray.config import Invalid
from dbus_ray.registry import Source, source


@dataclass
class MysqlDsn:
    user: str
    password: str
    host: str
    port: int


def parse_dsn(dsn: str) -> MysqlDsn:
    """`mysql://user:password@host:port` -> parts. Raises Invalid (key "dsn") naming what is wrong,
    never echoing the password."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        shown = parts.scheme or dsn.split(":", 1)[0]
        raise Invalid("dsn", f"bad DSN scheme {shown!r}: expected mysql://user:password@host:port")
    try:
        port = parts.port or 3306
    except ValueError:
        raise Invalid("dsn", "bad DSN port: expected mysql://user:password@host:port") from None
    if not parts.hostname:
        raise Invalid("dsn", "DSN has no host: expected mysql://user:password@host:port")
    if not parts.username:
        raise Invalid("dsn", "DSN has no user: expected mysql://user:password@host:port")
    return MysqlDsn(parts.username, parts.password or "", parts.hostname, port)


@dataclass
class MysqlOptions:
    dsn: str
    server_id: int | str = "auto"
    start: str = "latest"  # latest | earliest | file:offset | GTID set
    include: list[str] = field(default_factory=lambda: ["*.*"])
    exclude: list[str] = field(default_factory=list)
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None

    def __post_init__(self) -> None:
        parse_dsn(self.dsn)
        if isinstance(self.server_id, str) and self.server_id != "auto":
            raise Invalid("server_id", f"expected an integer or 'auto', got {self.server_id!r}")
        if isinstance(self.server_id, int) and not 1 <= self.server_id < 2**32:
            raise Invalid("server_id", "must be between 1 and 4294967295")
        from dbus_ray.routing import check_pattern

        for key in ("include", "exclude"):
            for i, pattern in enumerate(getattr(self, key)):
                reason = check_pattern(pattern)
                if reason:
                    raise Invalid(f"{key}[{i}]", reason)


@source("mysql")
class MysqlSource(Source):
    Options = MysqlOptions
