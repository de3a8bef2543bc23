"""The graph sink's rows made at the hand-over (``encode_rows``) against the writer's own.

The reference is :meth:`GraphWriter.write` given plain items (it makes every row itself); the
sink's partition encodes each batch on the worker and hands the rows to the writer beside the
items (:class:`sinks.serving.Encoded`). For any items (duplicate keys, second provenances,
score changes out of order, strings the graph refuses), any batching of the hand-over and any
chunk size, the writer must send the same statements, dead-letter the same items and snapshot
the same items. The writer here is the real one with its ``_send`` recording instead of sending
(no server: the driver connects only on a session's first use).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.records import Decoded, PolicyTags, Provenance, ScoreChange, Signal, Tagged
from core.settings import StoreSettings
from sinks.graph import GraphWriter, Storable, _storable_only, encode_rows
from sinks.serving import Encoded, PipelinedPartition

Item = Tagged | ScoreChange
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


class _Recording(GraphWriter):
    """A graph writer whose transactions are recorded, not sent."""

    def __init__(self, *, gate: threading.Event | None = None, compat: str = "") -> None:
        super().__init__("bolt://127.0.0.1:9", "neo4j", "unused", compat=compat)
        self.sent: list[list[tuple[str, Any]]] = []
        self.chunks: list[list[Item]] = []
        self.encoded: list[list[Any] | None] = []
        self._gate = gate

    def write(self, batch: Sequence[Item]) -> None:
        if self._gate is not None:
            self._gate.wait()
        self.chunks.append(list(batch))
        self.encoded.append(list(batch.encoded) if isinstance(batch, Encoded) else None)
        super().write(batch)

    def _send(
        self, write: bool, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[list[dict[str, Any]]]:
        # The parameters as plain data (Rows is a list), so the two runs compare by value.
        self.sent.append([(query, _plain(params)) for query, params in statements])
        return [[] for _ in statements]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _DeadLetters:
    """A dead-letter target recording what each sink sends it."""

    def __init__(self) -> None:
        self.sent: list[list[Item]] = []

    def for_sink(self, sink: str) -> Any:
        def dead_letter(batch: Sequence[Item], error: BaseException) -> None:
            self.sent.append(list(batch))

        return dead_letter


def _tagged(tenant: int, signal: int, offset: int, nul: bool) -> Tagged:
    signal_id = f"s{signal}\x00" if nul else f"s{signal}"
    sig = Signal(
        f"t{tenant}",
        signal_id,
        "latency",
        0.25 * signal,
        None,
        "src",
        _T0 + timedelta(seconds=signal),
    )
    provenance = Provenance("coherence.signals.v1", tenant, offset, 1, f"{offset:064x}")
    return Tagged(Decoded(sig, provenance), _TAGS, "policy-v1", f"prov-{offset % 7}-{tenant}")


def _change(tenant: int, seq: int) -> ScoreChange:
    provenance = Provenance("coherence.signals.v1", tenant, seq, 1, "h" * 64)
    return ScoreChange(
        f"t{tenant}",
        0.5,
        "WARN",
        _T0 + timedelta(seconds=seq),
        seq,
        float(seq),
        f"prov-{seq}",
        provenance,
        score_2dp=Decimal("0.50"),
        seq=seq,
    )


_items = st.lists(
    st.one_of(
        # A NUL in one signal of ten or so: the graph refuses it, the DLQ takes it.
        st.builds(
            _tagged,
            st.integers(0, 2),
            st.integers(0, 6),
            st.integers(0, 20),
            st.integers(0, 9).map(lambda n: n == 0),
        ),
        st.builds(_change, st.integers(0, 2), st.integers(1, 9)),
    ),
    max_size=40,
)


def _batches(items: list[Item], sizes: list[int]) -> list[list[Item]]:
    out, start = [], 0
    for size in sizes:
        if start >= len(items):
            break
        out.append(items[start : start + size])
        start += size
    if start < len(items):
        out.append(items[start:])
    return out


@settings(max_examples=150, deadline=None)
@given(_items, st.lists(st.integers(1, 12), max_size=8))
def test_a_chunk_with_its_encoded_rows_writes_what_the_items_alone_write(
    items: list[Item], sizes: list[int]
) -> None:
    for compat in ("", "falkordb"):
        for chunk in _batches(items, sizes):
            checked = _storable_only(chunk, lambda batch, error: None)
            reference, encoded = _Recording(compat=compat), _Recording(compat=compat)
            reference.write(Storable(checked))
            encoded.write(Storable(checked, encode_rows(checked)))
            assert encoded.sent == reference.sent


@settings(max_examples=60, deadline=None)
@given(_items, st.lists(st.integers(1, 12), max_size=8), st.integers(1, 9))
def test_the_encoding_partition_writes_dead_letters_and_snapshots_as_the_plain_one(
    items: list[Item], sizes: list[int], batch_size: int
) -> None:
    """Both partitions are handed the same batches while their writers wait (so the chunks are
    the pipeline's own, ``batch_size`` at a time), then let go."""
    stores = StoreSettings(batch_size=batch_size, max_in_flight=len(items) + 1)
    runs = []
    for encode in (None, encode_rows):
        gate = threading.Event()
        writer, dead = _Recording(gate=gate), _DeadLetters()
        part: PipelinedPartition[Item] = PipelinedPartition(
            "graph-unit",
            writer,
            stores,
            dead,  # type: ignore[arg-type]
            transient=lambda exc: False,
            prepare=_storable_only,
            encode=encode,
        )
        for batch in _batches(items, sizes):
            part.write_batch(batch)
        snapshot = part.snapshot()
        gate.set()
        part.close()
        assert part.snapshot() == []
        runs.append((writer, dead, snapshot))
    (plain, plain_dead, plain_snap), (fast, fast_dead, fast_snap) = runs
    assert fast_snap == plain_snap == items
    assert type(fast_snap) is list
    assert fast.chunks == plain.chunks
    assert fast.sent == plain.sent
    assert fast_dead.sent == plain_dead.sent
    # The rows the writer got are the hand-over's, each the item's own row.
    for chunk, rows in zip(fast.chunks, fast.encoded, strict=True):
        assert rows == encode_rows(chunk)


def test_a_resumed_encoding_partition_writes_its_snapshot_without_rows() -> None:
    items: list[Item] = [_tagged(0, 1, 1, False), _change(0, 1), _tagged(1, 2, 2, False)]
    writer = _Recording()
    part: PipelinedPartition[Item] = PipelinedPartition(
        "graph-unit",
        writer,
        StoreSettings(batch_size=10, max_in_flight=2),
        _DeadLetters(),  # type: ignore[arg-type]
        transient=lambda exc: False,
        prepare=_storable_only,
        encode=encode_rows,
        resume=list(items),
    )
    part.write_batch([_tagged(2, 3, 3, False)])
    part.close()
    assert [item for chunk in writer.chunks for item in chunk] == [
        *items,
        _tagged(2, 3, 3, False),
    ]
    encoded = [row for rows in writer.encoded for row in rows or []]
    assert encoded[:3] == [None, None, None]  # the resumed items: the writer makes their rows
    assert encoded[3] == encode_rows([_tagged(2, 3, 3, False)])[0]
    reference = _Recording()
    reference.write(list(writer.chunks[0]))
    assert writer.sent[0] == reference.sent[0]


def test_an_item_whose_row_fails_is_left_to_the_writer() -> None:
    bad = _tagged(0, 1, 1, False)
    object.__setattr__(bad.decoded.signal, "signal_id", 7)  # not a string: no key can be made
    assert encode_rows([bad, _change(0, 1)]) == [None, None]
