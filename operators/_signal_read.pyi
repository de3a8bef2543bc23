"""Types for the CPython extension ``operators/_signal_read.c`` (decode's C signal reader)."""

from datetime import datetime
from typing import Any

from core.records import Decoded, RawRecord

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
