import pytest

from services.common import godur
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(("text", "nanos"), [
    ("0", 0), ("500ms", 500_000_000), ("1m30s", 90_000_000_000), ("1.5h", 5_400_000_000_000),
    ("2us", 2_000), ("2µs", 2_000), ("7ns", 7),
])
def test_parse_ns(text: str, nanos: int) -> None:
    assert godur.parse_ns(text) == nanos


@pytest.mark.parametrize("text", ["", "soon", "10", "1m30", "-1s", "1s "])
def test_invalid_duration_has_gos_message(text: str) -> None:
    with pytest.raises(InvalidArgument, match=f'time: invalid duration "{text}"'):
        godur.parse_ns(text)


def test_is_duration() -> None:
    assert godur.is_duration("24h")
    assert godur.is_duration("1h30m")
    assert not godur.is_duration("0")
    assert not godur.is_duration("1700000000")

