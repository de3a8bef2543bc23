"""A replay computes with the settings the original computed with: the record its commits name.

Every lake commit names the record of the deciding settings its rows were computed with
(:mod:`sinks.settings_record`, :mod:`core.output_settings`). :func:`original_settings` finds the
commits of the original namespace (every table) that landed an offset of the replayed range and:

- **one record**: the replay computes with it, whatever its own environment says; the fields its
  environment sets otherwise are reported (a log line, and the report's ``settings``). The files
  the record names by hash (the policy bundle, the drift baseline) must be the same now, or the
  replay is refused (``REPLAY_INPUT_CHANGED``): a hash cannot be turned back into a file.
- **several** (the range spans a change of settings, or commits with a record and commits landed
  before records existed): refused (``REPLAY_SETTINGS_CHANGED``), naming each record's offsets
  per partition. Replaying each part with its own record would not reproduce the original
  either: a change of settings is a restart of the flow, whose stateful steps (drift
  references and windows, dedupe keys, score windows and ticks) carried their state across it
  from the recovery snapshot, while a replay of the later part starts them empty. Replay the
  parts separately (each verifies up to the state it starts without), or pass ``current``.
- **none** (data landed before records existed, or a range no commit of the original holds):
  the replay computes with its own settings, as before records existed, with a warning; a range
  landed before the score tick's default became 0.1 s still needs ``IGFLOW_SCORE_TICK_SECONDS=1``.

``use="current"`` (``igflow replay --settings current``) is the operator's override: the replay
computes with its own settings and reports how they differ from each record of the range.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from core.output_settings import (
    INPUTS,
    OutputSettings,
    ReplaySettingsError,
    SettingsReason,
    differences,
    file_sha256,
    output_settings,
)
from core.rego import bundle_digest, read_bundle
from core.settings import Settings
from sinks.lake_tables import DECONFLICTION, QUARANTINE, SCORES, SIGNALS
from sinks.settings_record import read_settings, settings_history

__all__ = ["SETTINGS_USES", "SettingsUsed", "original_settings", "own_record"]

log = logging.getLogger(__name__)

#: ``original``: the record of the range (the default); ``current``: the replay's own.
SETTINGS_USES = ("original", "current")


@dataclasses.dataclass(frozen=True, slots=True)
class SettingsUsed:
    """Which settings a replay computed with, for its report."""

    #: ``original`` (the record of the range), ``current`` (the operator's override) or
    #: ``unrecorded`` (the range's commits name none: the replay's own, as before records).
    source: str
    #: The record applied (``original``), or the records of the range (``current``).
    records: tuple[str, ...] = ()
    #: The deciding settings and files where the replay's own environment differs from the
    #: record (``original``: overridden by the record; ``current``: what may make it differ).
    differences: tuple[str, ...] = ()
    #: Deciding settings the record does not hold (an older release's): the replay's own apply.
    unrecorded: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The report's ``settings`` object."""
        return {
            "source": self.source,
            "records": list(self.records),
            "differences": list(self.differences),
            "unrecorded": list(self.unrecorded),
        }


def own_record(settings: Settings) -> OutputSettings:
    """The record a flow built from ``settings`` here and now would name."""
    path = settings.drift.baseline_file
    return output_settings(
        settings,
        bundle_digest(read_bundle(settings.policies_dir)),
        file_sha256(path) if path else "",
    )


def _tables(cat: Catalog, namespace: str) -> list[Table]:
    out = []
    for table in (SIGNALS, SCORES, QUARANTINE, DECONFLICTION):
        try:
            out.append(cat.load_table((namespace, table.name)))
        except NoSuchTableError:
            continue
    return out


def _range_records(
    tables: Iterable[Table],
    topic: str | None,
    start: Mapping[int, int] | None,
    end: Mapping[int, int] | None,
) -> tuple[dict[str | None, dict[int, tuple[int, int]]], dict[str, Table]]:
    """Per record named by a commit in range (``None``: a commit naming none), the offsets its
    commits landed per partition (lowest, highest); and a table holding each record."""
    found: dict[str | None, dict[int, tuple[int, int]]] = {}
    holder: dict[str, Table] = {}
    for table in tables:
        for commit in settings_history(table, topic):
            if start is not None and end is not None and not commit.touches(start, end):
                continue
            spans = found.setdefault(commit.sha256, {})
            for partition, first, last in commit.spans:
                low, high = spans.get(partition, (first, last))
                spans[partition] = (min(low, first), max(high, last))
            if commit.sha256 is not None:
                holder.setdefault(commit.sha256, table)
    return found, holder


def _describe(spans: Mapping[int, tuple[int, int]]) -> str:
    return ", ".join(f"{p}:{low}-{high}" for p, (low, high) in sorted(spans.items())) or "none"


def original_settings(
    settings: Settings,
    cat: Catalog,
    start: Mapping[int, int] | None = None,
    end: Mapping[int, int] | None = None,
    *,
    use: str = "original",
    namespace: str | None = None,
    sections: Iterable[str] | None = None,
) -> tuple[Settings, SettingsUsed]:
    """``settings`` with the deciding settings the original computed the range with, and what
    was used (see the module docstring). The original is ``namespace`` (default
    ``lake.namespace``); the range is ``[start[p], end[p])`` of ``kafka.topic`` per partition
    (``None``: every commit, of any topic). ``sections``: only these sections decide (a
    derivation of ``scores`` needs ``score`` alone); records that agree on them are one.

    :class:`~core.output_settings.ReplaySettingsError` when the range spans records
    (``REPLAY_SETTINGS_CHANGED``), a recorded file differs (``REPLAY_INPUT_CHANGED``) or the
    record cannot be read (``REPLAY_SETTINGS_UNREADABLE``)."""
    if use not in SETTINGS_USES:
        msg = f"settings must be one of {', '.join(SETTINGS_USES)}, not {use!r}"
        raise ValueError(msg)
    tables = _tables(cat, namespace or settings.lake.namespace)
    everything = start is None or end is None
    topic = None if everything else settings.kafka.topic
    found, holder = _range_records(tables, topic, start, end)
    records = {sha: read_settings(holder[sha], sha) for sha in found if sha is not None}
    if use == "current":
        own = own_record(settings)
        diffs = sorted({d for record in records.values() for d in differences(record, own)})
        if diffs:
            log.warning(
                "replaying with this environment's settings (--settings current), which differ "
                "from the original's: %s",
                "; ".join(diffs),
            )
        return settings, SettingsUsed("current", tuple(sorted(records)), tuple(diffs))
    keep = None if sections is None else frozenset(sections)

    def deciding(record: OutputSettings | None) -> object:
        if record is None:
            return None
        if keep is None:
            return record.sha256
        return sorted((s, sorted(v.items())) for s, v in record.values.items() if s in keep)

    distinct = {repr(deciding(records.get(sha) if sha else None)) for sha in found}
    if len(distinct) > 1:
        parts = "; ".join(
            f"{'no record' if sha is None else 'record ' + sha[:12]} at offsets {_describe(spans)}"
            for sha, spans in sorted(found.items(), key=lambda kv: _describe(kv[1]))
        )
        msg = (
            f"the range spans lake commits computed with different settings ({parts}); a replay "
            "across a change of settings cannot reproduce the original (its stateful steps "
            "carried their state across the change): replay each part on its own, or pass "
            "--settings current to compute the whole range with this environment's settings"
        )
        raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_CHANGED, msg)
    if not records:
        why = (
            "the original holds no row of this range"
            if not found
            else "the original's commits of this range record no settings (landed before "
            "settings were recorded)"
        )
        log.warning(
            "%s: replaying with this environment's settings; for a byte-identical replay they "
            "must be the original's (a range landed with 1 s score ticks needs "
            "IGFLOW_SCORE_TICK_SECONDS=1, one landed before score.close_on existed "
            "IGFLOW_SCORE_CLOSE_ON=signal)",
            why,
        )
        return settings, SettingsUsed("unrecorded")
    sha, record = sorted(records.items())[0]
    if keep is None:
        own = own_record(settings)
    else:  # only these sections decide: the rest is neither applied, checked nor computed
        record = OutputSettings({s: v for s, v in record.values.items() if s in keep}, {})
        # no policy bundle or baseline hashed: they are inputs, which a derivation drops
        values = output_settings(settings, "", "").values
        own = OutputSettings({s: v for s, v in values.items() if s in keep}, {})
    changed = differences(record, own)
    inputs = [d for d in changed if d.split(":", 1)[0] in INPUTS]
    if inputs:
        msg = (
            f"the original's output depends on files that differ here ({'; '.join(inputs)}): "
            "restore them (the policy bundle of tenancy.policies_dir, drift.baseline_file), or "
            "pass --settings current"
        )
        raise ReplaySettingsError(SettingsReason.REPLAY_INPUT_CHANGED, msg)
    applied, missing = record.apply(settings)
    if keep is not None:
        missing = [m for m in missing if m.split(".", 1)[0] in keep]
    if changed:
        log.info(
            "replaying with the original's settings (record %s), not this environment's: %s",
            sha[:12],
            "; ".join(changed),
        )
    if missing:
        log.warning(
            "the original's settings record holds no %s: replaying with this environment's",
            ", ".join(missing),
        )
    return applied, SettingsUsed("original", (sha,), tuple(changed), tuple(missing))
