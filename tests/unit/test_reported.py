"""``igflow.reported``: what a command's exception becomes (an exit status and a line on stderr)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, in_chain
from igflow.reported import reported


def _raise(exc: BaseException) -> int:
    raise exc


@pytest.mark.parametrize(
    ("raised", "status", "says"),
    [
        (KeyboardInterrupt("SIGTERM"), 143, "stopped by SIGTERM"),  # core.shutdown's handler
        (KeyboardInterrupt("SIGINT"), 130, "stopped by SIGINT"),
        (KeyboardInterrupt(), 130, "stopped by SIGINT"),  # a bare Ctrl-C
        (ConfigError("bad setting"), 2, "igflow x: bad setting"),
    ],
)
def test_a_stop_or_an_igflow_error_is_a_status_and_a_line_without_a_trace(
    raised: BaseException, status: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reported("x", lambda: _raise(raised)) == status
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_an_igflow_error_inside_another_is_named_after_the_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        try:
            raise ConfigError("the cause")
        except ConfigError as inner:
            raise RuntimeError("wrapped, as Bytewax does") from inner
    except RuntimeError as outer:
        wrapped = outer
    assert reported("x", lambda: _raise(wrapped)) == 1
    assert capsys.readouterr().err.rstrip().endswith("igflow x: the cause")
    with pytest.raises(ValueError, match="other"):
        reported("x", lambda: _raise(ValueError("other")))


def test_in_chain_follows_causes_then_contexts_and_stops_on_a_cycle() -> None:
    first = KeyboardInterrupt("SIGINT")
    second = RuntimeError("panic")
    second.__cause__ = first
    third = ValueError("later")
    third.__context__ = second
    assert in_chain(third, KeyboardInterrupt) is first
    assert in_chain(third, ValueError) is third
    assert in_chain(first, RuntimeError) is None
    first.__context__ = third  # a cycle
    assert in_chain(third, OSError) is None
