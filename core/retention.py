"""Retention tags and their cut-offs (``igflow retention``): plain data, no store.

A retention tag (``policies/tenancy.rego``: ``standard-365d``, tenant-03 ``standard-90d``) is
``<name>-<N>d``: keep a record N days. Which time: the record's **event time** (``ts`` of a signal,
``updated_at`` of a score, the window's end of a deconfliction row). It is the only time every
store holds (landed rows carry no wall-clock landing time, by design: replays must reproduce
them), it is what the tenant's data is *about*, and it makes a run reproducible with ``--now``: the
same lake and the same ``now`` delete the same rows. The price: a record that arrives late, with an
event time already past its retention, is landed and then deleted by the next run.

A row is past retention when ``event_time < now - N days`` (strictly: the cut-off instant itself
is kept). An unparseable tag is never guessed at (not deleted, not defaulted): it is reported with
:attr:`~core.reasons.ReasonCode.RETENTION_TAG_INVALID`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from core.errors import IgflowError
from core.reasons import ReasonCode

__all__ = [
    "Cutoffs",
    "RetentionTagInvalid",
    "cutoff",
    "cutoffs",
    "retention_days",
]

_TAG = re.compile(r"[a-z][a-z0-9]*-([0-9]+)d")
#: More days than any datetime can go back from now: refused as invalid, not overflowed.
_MAX_DAYS = 36500


class RetentionTagInvalid(IgflowError):
    """A retention tag that is not ``<name>-<N>d`` with 1 <= N <= 36,500."""

    reason = ReasonCode.RETENTION_TAG_INVALID

    def __init__(self, tag: str) -> None:
        self.tag = tag
        super().__init__(f"{ReasonCode.RETENTION_TAG_INVALID}: retention tag {tag!r}")


def retention_days(tag: str) -> int:
    """The days a retention tag keeps a record: ``"standard-90d"`` -> 90.

    The pattern is the provenance manifest's (``schemas/provenance/manifest.v1.json``);
    :class:`RetentionTagInvalid` for anything else, for 0 days and for more than 36,500."""
    match = _TAG.fullmatch(tag)
    if match is None:
        raise RetentionTagInvalid(tag)
    days = int(match.group(1))
    if not 1 <= days <= _MAX_DAYS:
        raise RetentionTagInvalid(tag)
    return days


def cutoff(tag: str, now: datetime) -> datetime:
    """The instant before which a record tagged ``tag`` is past retention at ``now`` (aware)."""
    if now.tzinfo is None:
        msg = "retention cut-offs need a timezone-aware now"
        raise ValueError(msg)
    return now - timedelta(days=retention_days(tag))


@dataclasses.dataclass(frozen=True, slots=True)
class Cutoffs:
    """The cut-off of every valid tag, and the tags that are not valid (never deleted)."""

    now: datetime
    by_tag: Mapping[str, datetime]
    invalid: frozenset[str]

    def of(self, tag: str) -> datetime | None:
        """The cut-off of ``tag``, or ``None`` for an invalid one."""
        return self.by_tag.get(tag)


def cutoffs(tags: Iterable[str], now: datetime) -> Cutoffs:
    """The cut-offs at ``now`` of the distinct ``tags``; invalid ones set apart."""
    by_tag: dict[str, datetime] = {}
    invalid: set[str] = set()
    for tag in sorted(set(tags)):
        try:
            by_tag[tag] = cutoff(tag, now)
        except RetentionTagInvalid:
            invalid.add(tag)
    return Cutoffs(now, by_tag, frozenset(invalid))
