"""Types for the CPython extension ``core/_native.c``."""

from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from typing import Any

from core.reasons import ReasonCode
from core.records import Decoded, PolicyTags, RawRecord, Rejected, Signal, Tagged
from core.tenants import TenantEntry

class Reader:
    def __init__(
        self,
        *,
        kinds: tuple[int, ...],
        signal_from: tuple[int, ...],
        signal_default: tuple[Any, ...],
        classes: tuple[type, type, type],
        signal_slots: tuple[Any, ...],
        provenance_slots: tuple[Any, ...],
        decoded_slots: tuple[Any, ...],
        epoch: datetime,
        unread: type[Exception],
        schema_id: int,
        shared: tuple[int, ...],
    ) -> None: ...
    def __call__(self, raw: RawRecord, value: bytes, /) -> Decoded: ...

def decode_run(
    raws: list[RawRecord],
    readers: dict[bytes, Callable[[RawRecord, bytes], Decoded]],
    errors: tuple[type[Exception], ...],
    slow: Callable[[RawRecord], Decoded | Rejected],
    raw_slots: tuple[Any, ...],
    /,
) -> list[Decoded | Rejected]: ...
def tag_run(
    items: list[Decoded],
    version: str,
    tail_of: Callable[[Decoded], str],
    tags_of: Callable[[str], PolicyTags],
    slow: Callable[[Decoded], Tagged],
    quote: Callable[[str], str],
    tagged: type[Tagged],
    slots: tuple[Any, Any, Any, Any],
    readers: tuple[Any, ...],
    /,
) -> list[Tagged]: ...
def graph_rows(
    items: list[Tagged], at: int, readers: tuple[Any, ...], rows: list[dict[str, Any]], /
) -> int: ...
def redis_signals(
    items: list[Tagged],
    at: int,
    readers: tuple[Any, ...],
    keys: dict[str, tuple[str, str, str]],
    new_keys: Callable[[str], tuple[str, str, str]],
    ttls: dict[str, str],
    new_ttl: Callable[[str], str],
    parts: list[str],
    /,
) -> int: ...
def raw_records(
    msgs: list[Any],
    start: int,
    topic: str,
    partition: int,
    end: int,
    cls: type[RawRecord],
    slots: tuple[Any, ...],
    headers_of: Callable[[list[tuple[str, bytes | None]]], tuple[tuple[str, bytes], ...]],
    out: list[RawRecord],
    /,
) -> int: ...
def dedupe_run(
    state: Any,
    items: list[Decoded],
    micros: Callable[[datetime], int],
    late_reject: Callable[[Decoded, Any], Rejected],
    decoded: type[Decoded],
    signal: type[Signal],
    slots: tuple[Any, Any, Any, Any, Any, Any],
    /,
) -> tuple[list[Decoded | Rejected], int, int] | None: ...

# drift (operators/drift_stats.py): None where the C path does not accept the input.
def psi_terms(
    proportions: tuple[float, ...],
    cuts: Sequence[int],
    n: int,
    total: float,
    smoothing: float,
    /,
) -> float | None: ...
def ks_bound(below: list[int], cuts: Sequence[int], m: int, n: int, /) -> int | None: ...
def cuts_below(
    edges: tuple[float, ...], samples: tuple[Sequence[float], ...], /
) -> list[int] | None: ...
def drift_passes(
    proportions: tuple[float, ...],
    edges: tuple[float, ...],
    below: list[int] | None,
    n: int,
    batch: list[float],
    window: tuple[Sequence[float], ...],
    psi_threshold: float,
    ks_alpha: float,
    batch_alone: bool,
    smoothing: float,
    /,
) -> bool | None: ...
def with_horizon(
    item: Decoded, horizon: datetime | None, cls: type[Decoded], slots: tuple[Any, ...], /
) -> Decoded: ...
def validate_run(
    items: list[Decoded],
    decoded_slots: tuple[Any, Any, Any],
    signal_slots: tuple[Any, ...],
    limits: tuple[int, ...],
    utc: tzinfo,
    tenants_get: Callable[[str], TenantEntry | None],
    gates: tuple[Callable[[Decoded], tuple[ReasonCode, str] | None], ...],
    slow: Callable[[Decoded], Decoded | Rejected],
    refused: Callable[[Decoded, tuple[ReasonCode, str]], Rejected],
    /,
) -> list[Decoded | Rejected]: ...

# score (operators/score.py TickScore.add): None where the C path does not take the batch;
# else (changes, error, ...the Python loop's locals at its end: TickScore._store writes them).
def score_run(
    state: Any,
    items: list[Tagged],
    classes: tuple[type, type, type, type, type, type],
    slots: tuple[Any, ...],
    extras: tuple[Any, Any, tuple[str, ...], tuple[Any, ...], Callable[..., Any]],
    /,
) -> tuple[Any, ...] | None: ...
def _score_hints(
    a: int, b: int, c: int, d: int, shift: int, ew: int, /
) -> tuple[int, int, int, bool, bool, int, float]: ...

# lake arrow (sinks/lake_tables.py TableDef.to_arrow): per column of plan ((slot descriptors,
# kind[, Decimal, precision, scale]), ...), its Arrow buffers (kind 0: (offsets, data);
# 1: (validity | None, data, nulls); 2, 3, 4, 6: data; 5: the values), or None where the
# reference must build the batch.
def lake_columns(items: list[Any], plan: tuple[tuple[Any, ...], ...], /) -> list[Any] | None: ...

# sinks.lake_plan._PlannedBatches._place: each of values (its provenance and lane in provs
# and lanes) into pending[commit], or unplanned; closed[commit] counts the rows at a mark.
def plan_place(
    values: list[Any],
    provs: list[Any],
    lanes: list[str],
    marks_of: dict[tuple[str, int, str], list[int]],
    index_of: dict[tuple[str, int, str], list[int]],
    pending: dict[int, list[Any]],
    closed: dict[int, int],
    unplanned: list[Any],
    nxt: int,
    /,
) -> None: ...

# operators.split: the items of a list that are (want) or are not instances of cls, whose
# metaclass must be exactly type.
def kind_of(items: list[Any], cls: type[Any], want: bool, /) -> list[Any]: ...
def drift_run(
    state: Any,
    attrs: dict[str, Any],
    items: list[Decoded],
    start: int,
    out: list[Any],
    config: tuple[Any, ...],
    checks_markers: bool,
    /,
) -> int: ...

# exchange (core/records.py Records.__reduce__): a run of records of the registered classes as
# one bytes object (None: a value it does not take, the run pickles as columns), and back.
def exchange_init(
    table: tuple[tuple[type, tuple[Any, ...]], ...], utc: tzinfo, fingerprint: bytes, /
) -> None: ...
def exchange_pack(run: list[Any], /) -> bytes | None: ...
def exchange_unpack(data: bytes, /) -> list[Any]: ...
