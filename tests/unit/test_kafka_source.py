"""The Kafka source's fetch loop (``sources/kafka.py``): ``_Partition._records``, which reads the
common message inline, gives what its reference ``_take`` gives message by message, for any
fetch: errors, end-of-partition, messages without an offset, the end offset reached, headers
with and without values, missing timestamps. Messages are confluent-kafka's own ``Message``
objects (constructible since 2.x), so no broker is needed and nothing is mocked."""

from __future__ import annotations

import gc
import pickle
import sys
import tracemalloc
from types import SimpleNamespace
from typing import Any

import hypothesis.strategies as st
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message
from hypothesis import given, settings

from core.errors import IgflowError
from core.records import RawRecord
from sources import kafka as kafka_source
from sources.epoch_phase import SNAPSHOT_LAG_S
from sources.kafka import _EMPTY_WAIT_S, KafkaTopicSource, _Partition


def _part(*, bounded: bool, end: int | None) -> _Partition:
    # Unbounded and with no stop, the constructor asks the broker nothing; the state a bounded
    # partition has after fixing its end is then set as _fix_end sets it.
    config = {"bootstrap.servers": "127.0.0.1:9", "group.id": "unit", "log_level": 0}
    part = _Partition(config, "t", 3, 0, bounded=False, batch_size=10)
    part._bounded = bounded
    part._end = end
    return part


_ERRORS = {
    "none": None,
    "eof": lambda: KafkaError(KafkaError._PARTITION_EOF),
    "transient": lambda: KafkaError(KafkaError._TRANSPORT),
    "fatal": lambda: KafkaError(KafkaError._FATAL, fatal=True),
}


@st.composite
def _message(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(sorted(_ERRORS)))
    make = _ERRORS[kind]
    fields: dict[str, Any] = {
        "topic": "t",
        "partition": 3,
        "key": draw(st.one_of(st.none(), st.binary(max_size=4))),
        "value": draw(st.one_of(st.none(), st.binary(max_size=8))),
        "timestamp": (draw(st.integers(0, 2)), draw(st.integers(-1, 5))),
        "error": None if make is None else make(),
    }
    headers = draw(
        st.one_of(
            st.none(),
            st.lists(st.tuples(st.sampled_from(["a", "b"]), st.one_of(st.none(), st.binary()))),
        )
    )
    if headers is not None:
        fields["headers"] = headers
    offset = draw(st.one_of(st.none(), st.integers(-2, 40)))
    if offset is not None:  # left out: the message has none (offset() is None)
        fields["offset"] = offset
    return Message(**fields)


def _reference(part: _Partition, msgs: list[Message]) -> list[RawRecord]:
    batch: list[RawRecord] = []
    for msg in msgs:
        if part._take(msg, batch):
            break
    return batch


@settings(max_examples=400, deadline=None)
@given(
    msgs=st.lists(_message(), max_size=12),
    bounded=st.booleans(),
    end=st.one_of(st.none(), st.integers(0, 40)),
)
def test_law_the_fetch_loop_is_its_reference_message_by_message(
    msgs: list[Message], bounded: bool, end: int | None
) -> None:
    fast, slow = _part(bounded=bounded, end=end), _part(bounded=bounded, end=end)
    try:
        try:
            expected: list[RawRecord] | str = _reference(slow, msgs)
        except IgflowError as exc:
            expected = str(exc)
        try:
            got: list[RawRecord] | str = fast._records(msgs)
        except IgflowError as exc:
            got = str(exc)
        assert got == expected
        assert fast._done == slow._done
    finally:
        fast.close()
        slow.close()


def test_the_common_message_is_read_inline_into_the_same_record() -> None:
    part = _part(bounded=True, end=10)
    try:
        msgs = [
            Message(topic="t", partition=3, offset=4, key=b"k", value=b"v", timestamp=(1, 7)),
            Message(topic="t", partition=3, offset=5, value=b"w", headers=[("h", None)]),
            Message(topic="t", partition=3, offset=10, value=b"past the end"),
            Message(topic="t", partition=3, offset=6, value=b"never read"),
        ]
        assert part._records(msgs) == [
            RawRecord("t", 3, 4, b"k", b"v", 7, None, ()),
            RawRecord("t", 3, 5, None, b"w", None, None, (("h", b""),)),
        ]
        assert part._done  # the end offset stopped the fetch
    finally:
        part.close()


def test_a_fatal_error_stops_the_fetch() -> None:
    part = _part(bounded=False, end=None)
    try:
        fatal = KafkaError(KafkaError._FATAL, fatal=True)
        msgs = [Message(topic="t", partition=3, offset=0, value=b"a", error=fatal)]
        with pytest.raises(IgflowError, match=r"fatal consumer error on t\[3\]"):
            part._records(msgs)
    finally:
        part.close()


@settings(max_examples=300, deadline=None)
@given(
    msgs=st.lists(_message(), max_size=12),
    bounded=st.booleans(),
    end=st.one_of(st.none(), st.integers(0, 40)),
)
def test_the_c_loop_gives_what_its_python_reference_gives(
    msgs: list[Message], bounded: bool, end: int | None
) -> None:
    fast, slow = _part(bounded=bounded, end=end), _part(bounded=bounded, end=end)
    try:
        outcomes = []
        for part, read in ((fast, fast._records), (slow, slow.records_python)):
            try:
                got: Any = [pickle.dumps(r) for r in read(msgs)]
            except IgflowError as exc:
                got = str(exc)
            outcomes.append((got, part._done))
        assert outcomes[0] == outcomes[1]
    finally:
        fast.close()
        slow.close()


def test_the_c_loop_keeps_nothing() -> None:
    part = _part(bounded=True, end=2000)
    msgs = [
        Message(
            topic="t",
            partition=3,
            offset=i,
            key=b"k%d" % i,
            value=b"v" * i,
            timestamp=(1, 10**6 + i),
        )
        for i in range(1000, 1020)
    ]
    # and one with headers; not one the reference takes (its warning stays in pytest's log
    # capture, which would grow)
    msgs += [Message(topic="t", partition=3, offset=1025, value=b"h", headers=[("h", b"1")])]
    try:
        tracemalloc.start()
        for rounds in (20, 200):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(rounds):
                part._records(msgs)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        assert grown < 64_000, grown
        # Nor a reference to what a message holds (that would keep every fetch alive).
        last = msgs[-2]
        held = [last.key(), last.value(), last.offset(), last.timestamp()[1]]
        counts = [sys.getrefcount(x) for x in held]
        for _ in range(100):
            part._records(msgs)
        assert [sys.getrefcount(x) for x in held] == counts
    finally:
        tracemalloc.stop()
        part.close()


class _HeldConsumer:
    """A consumer whose fetched messages are ``held`` and whose next ones are ``coming``: a
    call that waits (a timeout above 0) finds them arrived. Records each call and its wait."""

    def __init__(self, held: list[Message], coming: list[Message]) -> None:
        self.held, self.coming = list(held), list(coming)
        self.calls: list[tuple[str, int, float]] = []

    def _wait(self, want: int, timeout: float) -> None:
        if timeout > 0 and len(self.held) < want:
            self.held += self.coming
            self.coming = []

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.calls.append(("consume", num_messages, timeout))
        self._wait(num_messages, timeout)
        taken, self.held = self.held[:num_messages], self.held[num_messages:]
        return taken

    def poll(self, timeout: float) -> Message | None:
        self.calls.append(("poll", 1, timeout))
        self._wait(1, timeout)
        return self.held.pop(0) if self.held else None

    def close(self) -> None:
        pass


def _msgs(offsets: range) -> list[Message]:
    return [Message(topic="t", partition=3, offset=o, value=b"v") for o in offsets]


@pytest.mark.parametrize(("held", "coming"), [(3, 5), (10, 0), (12, 4), (1, 0)])
def test_a_partition_holding_messages_is_read_without_waiting(held: int, coming: int) -> None:
    """Fewer than a batch held (the common case below 1,000 records a poll) used to wait out the
    whole 10 ms of ``consume(batch, 0.01)`` on every partition in turn; now nothing waits."""
    part = _part(bounded=False, end=None)
    real = part._consumer
    fake = _HeldConsumer(_msgs(range(held)), _msgs(range(held, held + coming)))
    part._consumer = fake  # type: ignore[assignment]
    try:
        batch = part.next_batch()
        assert [r.offset for r in batch] == list(range(min(held, 10)))
        assert all(timeout == 0 for _call, _n, timeout in fake.calls)
        assert fake.calls == [("consume", 10, 0)]
        assert part.next_awake() is None  # not idle: polled again at once
    finally:
        real.close()


@pytest.mark.parametrize("coming", [0, 1, 4, 9, 15])
def test_an_empty_partition_waits_for_its_first_message_only(coming: int) -> None:
    """Nothing held: one short wait for the first message (``poll`` returns at it), then what
    came with it, up to the batch; nothing at all: an idle partition, polled again later."""
    part = _part(bounded=False, end=None)
    real = part._consumer
    fake = _HeldConsumer([], _msgs(range(coming)))
    part._consumer = fake  # type: ignore[assignment]
    try:
        batch = part.next_batch()
        assert [r.offset for r in batch] == list(range(min(coming, 10)))
        assert fake.calls[:2] == [("consume", 10, 0), ("poll", 1, _EMPTY_WAIT_S)]
        assert 0 < _EMPTY_WAIT_S <= SNAPSHOT_LAG_S / 2
        assert fake.calls[2:] == ([("consume", 9, 0)] if coming else [])
        assert (part.next_awake() is None) == bool(coming)
        assert part._next == (min(coming, 10) if coming else 0)
    finally:
        real.close()


class _Admin:
    """An ``AdminClient`` whose metadata lists partitions 0-2 of topic ``t``; counts clients."""

    made = 0

    def __init__(self, _config: dict[str, Any]) -> None:
        _Admin.made += 1

    def list_topics(self, topic: str, timeout: float) -> Any:
        meta = SimpleNamespace(partitions={0: None, 1: None, 2: None}, error=None)
        return SimpleNamespace(topics={topic: meta})


def test_the_partitions_are_listed_once_per_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay lists them before it builds the flow, and Bytewax lists them again: one client
    and one metadata request, not two."""
    monkeypatch.setattr(kafka_source, "AdminClient", _Admin)
    _Admin.made = 0
    source = KafkaTopicSource("127.0.0.1:9", "t", bounded=False)
    first = source.list_parts()
    first.append("mine")  # the caller's list, not the source's
    assert source.list_parts() == ["0", "1", "2"]
    assert _Admin.made == 1
    with pytest.raises(IgflowError, match=r"no partition\(s\) \[5\]"):
        KafkaTopicSource("127.0.0.1:9", "t", bounded=False, end_offsets={5: 1}).list_parts()


@pytest.mark.parametrize("named_only", [False, True])
def test_with_named_only_a_partition_named_in_neither_bound_reads_nothing(
    named_only: bool,
) -> None:
    config = {"log_level": 0}
    source = KafkaTopicSource(
        "127.0.0.1:9",
        "t",
        bounded=False,
        config=config,
        start_offsets={0: 4},
        end_offsets={1: 7},
        named_only=named_only,
    )
    parts = {p: source.build_part("in", str(p), None) for p in (0, 1, 2)}

    def state(p: int) -> tuple[int, int | None, bool]:
        return parts[p]._next, parts[p]._end, parts[p]._done

    try:
        assert state(0) == (4, None, False)
        assert state(1) == (OFFSET_BEGINNING, 7, False)
        if named_only:
            assert state(2) == (0, 0, True)
            with pytest.raises(StopIteration):
                parts[2].next_batch()
        else:  # from the beginning, without an end
            assert state(2) == (OFFSET_BEGINNING, None, False)
    finally:
        for part in parts.values():
            part.close()
