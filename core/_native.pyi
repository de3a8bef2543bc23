"""Types for the CPython extension ``core/_native.c``."""

from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from core.reasons import ReasonCode
from core.records import Decoded, PolicyTags, RawRecord, Rejected, Tagged
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
    ) -> None: ...
    def __call__(self, raw: RawRecord, value: bytes, /) -> Decoded: ...

def tag_run(
    items: list[Decoded],
    version: str,
    tail_of: Callable[[Decoded], str],
    tags_of: Callable[[str], PolicyTags],
    slow: Callable[[Decoded], Tagged],
    quote: Callable[[str], str],
    tagged: type[Tagged],
    slots: tuple[Any, Any, Any, Any],
    /,
) -> list[Tagged]: ...
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
