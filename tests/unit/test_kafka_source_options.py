"""Options of source `kafka`: a config error is one line naming the option."""

from __future__ import annotations

import pytest

from dbus_ray.sources.kafka import KafkaSourceOptions
from tests.support.options import source_error, source_options

BASE = {"type": "kafka", "bootstrap": "h:1", "topics": ["a"]}


@pytest.mark.parametrize(("source", "message"), [
    ({"commit_offsets": True}, "source.commit_offsets: needs group (the consumer group to commit to)"),
    ({"group": " "}, "source.group: must not be empty"),
    ({"group": "g", "consumer": {"group.id": "h"}}, "source.consumer.group.id: is set by group"),
    ({"group": 3}, "source.group"),
    ({"group": "g", "commit_offsets": "maybe"}, "source.commit_offsets"),
])
def test_group_option_errors_are_one_line_naming_the_option(source: dict, message: str) -> None:
    text = source_error({**BASE, **source}, "k.yaml")
    assert text.startswith(f"k.yaml: {message}"), text


def test_group_options_default_to_assign_without_commits() -> None:
    plain = source_options(BASE)
    assert isinstance(plain, KafkaSourceOptions) and plain.group is None and plain.commit_offsets is False
    grouped = source_options({**BASE, "group": "mirror", "commit_offsets": True, "consumer": {"client.id": "m1"}})
    assert grouped.group == "mirror" and grouped.commit_offsets is True
