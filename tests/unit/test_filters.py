"""The shared filter module: times as moby's GetTimestamp reads them, label
and name matchers, key validation, and the build-cache prune selection."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from berth.types.v1 import types_pb2
from services.builder.cache import RecordView, prune_selection
from services.builder.store import CacheRecord
from services.common.errors import InvalidArgument
from services.common.filters import Filters, label_matches, name_matches, timestamp_ns

NOW = 1_700_000_000_700_000_000  # 2023-11-14T22:13:20.7Z
SECOND = 1_000_000_000
AT_NOW = 1_700_000_000 * SECOND  # NOW in whole seconds


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Run with the process in a given local time zone."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", AT_NOW - 600 * SECOND),
    ("90s", AT_NOW - 90 * SECOND),
    ("1h30m", AT_NOW - 5400 * SECOND),
    ("1.5h", AT_NOW - 5400 * SECOND),
    ("500ms", AT_NOW),
    ("2023-11-14T22:13:20Z", AT_NOW),
    ("2023-11-14T22:13:20.25Z", AT_NOW + SECOND // 4),
    ("2023-11-14T23:13:20+01:00", AT_NOW),
    ("2023-11-14T17:13:20.123456789-05:00", AT_NOW + 123_456_789),
    ("2023-11-14T22:13:20.1234567891Z", AT_NOW + 123_456_789),
    ("2023-11-14T22:13Z", AT_NOW - 20 * SECOND),
    ("2023-11-14T22Z", AT_NOW - 800 * SECOND),
    ("2023-11-14Z", AT_NOW - 80000 * SECOND),
    ("2023-11-15+01:00", AT_NOW - 80000 * SECOND + 82800 * SECOND),
    ("1700000000", AT_NOW),
    ("1700000000.5", AT_NOW + SECOND // 2),
    ("1700000000.000000001", AT_NOW + 1),
    ("0", 0),
])
def test_timestamps_as_moby_reads_them(text: str, expected: int) -> None:
    assert timestamp_ns(text, NOW) == expected


@pytest.mark.parametrize("zone", ["UTC0", "EST5"], indirect=True)
@pytest.mark.parametrize(("text", "utc"), [
    ("2023-11-14T22:13:20", AT_NOW),
    ("2023-11-14T22:13:20.5", AT_NOW + SECOND // 2),
    ("2023-11-14T22:13", AT_NOW - 20 * SECOND),
    ("2023-11-14T22", AT_NOW - 800 * SECOND),
    ("2023-11-14", AT_NOW - 80000 * SECOND),
])
def test_times_without_zone_are_local(zone: None, text: str, utc: int) -> None:
    offset = -time.timezone * SECOND
    assert timestamp_ns(text, NOW) == utc - offset


@pytest.mark.parametrize(("text", "message"), [
    ("soon", 'failed to parse value as time or duration: "soon"'),
    ("", 'failed to parse value as time or duration: ""'),
    ("1h30", 'failed to parse value as time or duration: "1h30"'),
    ("1700000000.", 'failed to parse value as time or duration: "1700000000."'),
    ("2023-13-01", 'parsing time "2023-13-01" as "2006-01-02"'),
    ("2023-11-14T25:00:00Z", 'parsing time "2023-11-14T25:00:00Z" as "2006-01-02T15:04:05Z07:00"'),
    ("2023-11-14T22:13:20Zjunk", "parsing time"),
])
def test_bad_times_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace(".", r"\.")):
        timestamp_ns(text, NOW)


def test_filter_times_name_the_filter() -> None:
    with pytest.raises(InvalidArgument, match="\"until\" filter expects a duration .*soon"):
        Filters({"until": ["soon"]}).until_ns(NOW)
    with pytest.raises(InvalidArgument, match="more than one until filter specified"):
        Filters({"until": ["1h", "2h"]}).until_ns(NOW)
    assert Filters().until_ns(NOW) is None
    assert Filters({"until": ["1h30m"]}).until_ns(NOW) == AT_NOW - 5400 * SECOND


def test_unknown_keys_are_refused() -> None:
    assert "label" in Filters({"label": ["a"]}).checked({"label"})
    with pytest.raises(InvalidArgument, match="^invalid filter 'lable'$"):
        Filters({"lable": ["a"]}).checked({"label"})


def test_from_message() -> None:
    message = types_pb2.Filters()
    message.filters["label"].values.extend(["a", "b=c"])
    assert Filters.from_message(message).get("label") == ["a", "b=c"]


LABELS = {"tier": "web", "team": "core"}


@pytest.mark.parametrize(("filters", "kept"), [
    ({}, True),
    ({"label": ["tier"]}, True),
    ({"label": ["tier=web"]}, True),
    ({"label": ["tier=db"]}, False),
    ({"label": ["tier=web", "team=core"]}, True),
    ({"label": ["tier=web", "team=ops"]}, False),
    ({"label": ["owner"]}, False),
    ({"label!": ["owner"]}, True),
    ({"label!": ["tier"]}, False),
    ({"label!": ["tier=db"]}, True),
    ({"label!": ["tier=web"]}, False),
    ({"label!": ["tier=web", "owner"]}, True),
    ({"label": ["team"], "label!": ["tier=web"]}, False),
])
def test_label_matchers(filters: dict[str, list[str]], kept: bool) -> None:
    assert Filters(filters).match_labels(LABELS) is kept


def test_label_expression() -> None:
    assert label_matches({"a": ""}, "a")
    assert label_matches({"a": ""}, "a=")
    assert not label_matches({"a": "x"}, "a=")
    assert label_matches({"a": "x=y"}, "a=x=y")


def test_name_matchers_are_regular_expressions() -> None:
    assert name_matches("web", "my-web-1")
    assert name_matches("^my-web-1$", "my-web-1")
    assert not name_matches("^web", "my-web-1")
    assert name_matches("a[", "a[")
    assert not name_matches("a[", "a[b")
    filters = Filters({"name": ["^/app$", "^db"]})
    assert filters.match_name("name", "app", "/app")
    assert filters.match_name("name", "db-1")
    assert not filters.match_name("name", "web")
    assert Filters().match_name("name", "anything")


@pytest.mark.parametrize(("values", "expected"), [
    (["true"], True), (["1"], True), (["false"], False), (["0"], False), (["true", "1"], True)])
def test_booleans(values: list[str], expected: bool) -> None:
    assert Filters({"dangling": values}).boolean("dangling", not expected) is expected


def test_flags_are_given_or_absent() -> None:
    assert Filters({"dangling": ["true"]}).flag("dangling") is True
    assert Filters({"dangling": ["0"]}).flag("dangling") is False
    assert Filters().flag("dangling") is None


@pytest.mark.parametrize("values", [["yes"], ["TRUE"], ["true", "false"], []])
def test_bad_booleans_are_refused(values: list[str]) -> None:
    with pytest.raises(InvalidArgument, match="^invalid filter 'dangling="):
        Filters({"dangling": values}).boolean("dangling", False)


def test_one_value() -> None:
    assert Filters({"id": ["a"]}).one("id") == "a"
    assert Filters().one("id") is None
    with pytest.raises(InvalidArgument, match="filters expect only one value"):
        Filters({"id": ["a", "b"]}).one("id")


def _record(key: str, parent: str = "", description: str = "", last_used: float = 0.0,
            in_use: bool = False, shared: bool = False) -> RecordView:
    return RecordView(record=CacheRecord(
        key=key, parent=parent, image_id="sha256:" + key, description=description, size=1,
        created_at=0.0, last_used_at=last_used, usage_count=0), in_use=in_use, shared=shared)


RECORDS = [
    _record("aaa111", parent="sha256:base", description="COPY a", last_used=NOW / SECOND),
    _record("bbb222", description="RUN b", last_used=NOW / SECOND - 7200, in_use=True),
    _record("ccc333", parent="sha256:base", description="RUN c", last_used=0, shared=True),
]


@pytest.mark.parametrize(("filters", "selected"), [
    ({}, ["aaa111", "bbb222", "ccc333"]),
    ({"id": ["^b"]}, ["bbb222"]),
    ({"id": ["33"]}, ["ccc333"]),
    ({"parent": ["sha256:base"]}, ["aaa111", "ccc333"]),
    ({"parent": []}, ["aaa111", "ccc333"]),
    ({"description": ["RUN b"]}, ["bbb222"]),
    ({"type": ["regular"]}, ["aaa111", "bbb222", "ccc333"]),
    ({"type": ["internal"]}, []),
    ({"inuse": []}, ["bbb222"]),
    ({"inuse": ["false"]}, ["aaa111", "ccc333"]),
    ({"shared": [""]}, ["ccc333"]),
    ({"private": ["true"]}, ["aaa111", "bbb222"]),
    ({"until": ["1h30m"]}, ["bbb222", "ccc333"]),
    ({"unused-for": ["1h"]}, ["bbb222", "ccc333"]),
    ({"until": ["2023-11-14T20:00:00Z"]}, ["ccc333"]),
    ({"until": ["1h30m"], "description": ["RUN c"]}, ["ccc333"]),
    ({"label": ["a"]}, []),
    ({"label!": ["a"]}, ["aaa111", "bbb222", "ccc333"]),
])
def test_build_cache_prune_selection(filters: dict[str, list[str]], selected: list[str]) -> None:
    chosen = prune_selection(Filters(filters), NOW)
    assert [view.record.key for view in RECORDS if chosen(view)] == selected


@pytest.mark.parametrize(("filters", "message"), [
    ({"dangling": ["true"]}, "invalid filter 'dangling'"),
    ({"mutable": []}, "invalid filter 'mutable'"),
    ({"id": ["a", "b"]}, "filters expect only one value"),
    ({"until": ["1h"], "unused-for": ["1h"]}, 'conflicting filters: "until" and "unused-for"'),
    ({"until": ["soon"]}, '"until" filter expects a duration'),
    ({"id": ["("]}, "invalid filter 'id=\\('"),
    ({"inuse": ["maybe"]}, "invalid filter 'inuse=\\[maybe\\]'"),
])
def test_build_cache_prune_refusals(filters: dict[str, list[str]], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prune_selection(Filters(filters), NOW)
