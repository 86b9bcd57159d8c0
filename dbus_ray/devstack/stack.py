"""``DevStack``: the dev stack's MariaDB and Kafka broker started and stopped together."""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any, Self

from dbus_ray.devstack.kafka import Broker
from dbus_ray.devstack.mariadb import MariaDB
from dbus_ray.devstack.process import DevStackError

#: Version of the dict ``DevStack.state()`` returns (the layout of the ``dbus dev up`` state file).
_STATE_VERSION = 2


class DevStack:
    """MariaDB + broker together (each optional); a context manager."""

    def __init__(
        self,
        *,
        mariadb: bool = True,
        broker: bool = True,
        mariadb_options: dict[str, Any] | None = None,
        broker_options: dict[str, Any] | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        detached: bool = False,
    ) -> None:
        common: dict[str, Any] = {"parent_dir": parent_dir, "detached": detached}
        self.mariadb: MariaDB | None = MariaDB(**{**common, **(mariadb_options or {})}) if mariadb else None
        self.broker: Broker | None = Broker(**{**common, **(broker_options or {})}) if broker else None

    def start(self) -> Self:
        try:
            if self.mariadb is not None:
                self.mariadb.start()
            if self.broker is not None:
                self.broker.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        errors: list[BaseException] = []
        for component in (self.broker, self.mariadb):
            if component is None:
                continue
            try:
                component.stop()
            except (DevStackError, OSError) as exc:  # stop the other one anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    def state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "started_at": time.time(),
            "mariadb": self.mariadb.state() if self.mariadb is not None else None,
            "broker": self.broker.state() if self.broker is not None else None,
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
