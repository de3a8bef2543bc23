"""The settings a run's landed bytes depend on, in a canonical form a replay can read back exactly.

A replay that is meant to prove its output bit-identical must compute with the settings the
original run computed with, not with its own environment's (``score.tick_seconds`` changed its
default from 1 s to 0.1 s: a range landed with 1 s ticks no longer verified). Each lake commit
names the record of its flow's deciding settings (``sinks.settings_record``), and
``igflow replay`` applies the record of the range it replays (``replay.settings``).

What is recorded (:data:`DECIDING`), and why:

- **validate**: the event-time bounds and field size limits decide which records are rejected
  (``TS_OUT_OF_RANGE``, ``FIELD_INVALID``).
- **drift**: batch size and hold, the reference (batches, values, baseline file), the window,
  bins and both thresholds decide batch boundaries and verdicts, so what is quarantined and what
  passes. ``idle_flush_seconds`` is not: a bounded run (a replay always is) sets it to 0 and a
  tail run's idle flush is a wall-clock decision no record can repeat.
- **dedupe**: the TTL decides which repeats are dropped.
- **score**: window, thresholds, tick and ``close_on`` decide every ``scores`` row. A record
  written before ``close_on`` existed is applied with ``"signal"`` (:data:`LEGACY`), what those
  runs computed with, not with today's default.
- **psi**: the window, mode and the parties and residencies the policy judges decide each
  ``deconfliction`` row (the partner's URL, timeouts and retries do not: they decide whether it
  answers).
- **sources**: the registry mode and grace decide checks and provenance stamps.
- **seal**: whether sensitive fields land sealed.
- **stores.redis_stream_max**: how much of a tenant's stream a scratch Redis keeps.

Recorded but not restorable, only checked (:data:`INPUTS`): the policy bundle's version (the
SHA-256 of ``tenancy.policies_dir``'s files: tags, redaction and ``policy_version`` follow it)
and the drift baseline file's SHA-256. A replay cannot rebuild a file from its hash; one whose
files differ from the record's is refused (``REPLAY_INPUT_CHANGED``) unless told to use its own.

Not recorded: ``lake.batch_*`` (which rows share a commit: a replay takes that from the
original's commits themselves, :mod:`sinks.lake_plan`, which is exact where the settings would
only be so with the same timing); ``quarantine.release_key`` (a secret: a replay needs the same
key for released records to pass, and ``igflow verify`` shows it when they do not); the
residency map and the kill switches (a replay re-applies the original's holds by position,
:mod:`flows.held`); connection, retry, timing and observability settings.

The canonical form is compact JSON with sorted keys; floats are written as Python's shortest
round-trip ``repr``, so a value read back is the value recorded. Its SHA-256 names it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.settings import Settings

__all__ = [
    "DECIDING",
    "FORMAT",
    "INPUTS",
    "LEGACY",
    "OutputSettings",
    "ReplaySettingsError",
    "SettingsReason",
    "differences",
    "file_sha256",
    "output_settings",
]

#: Version of the canonical form; a reader refuses a newer one.
FORMAT = 1

#: Section -> the fields of it that decide landed bytes (see the module docstring).
DECIDING: Mapping[str, tuple[str, ...]] = {
    "validate": (
        "max_future_skew_seconds",
        "max_age_seconds",
        "max_id_bytes",
        "max_type_bytes",
        "max_source_bytes",
        "max_selectors",
        "max_selector_bytes",
    ),
    "drift": (
        "batch_size",
        "min_batch_size",
        "batch_seconds",
        "small_batch_wait_seconds",
        "reference_batches",
        "reference_values",
        "baseline_file",
        "window_batches",
        "bins",
        "psi_threshold",
        "ks_alpha",
    ),
    "dedupe": ("ttl_seconds",),
    "score": ("window_seconds", "healthy_at", "warn_at", "tick_seconds", "close_on"),
    "psi": (
        "mode",
        "window_seconds",
        "partner_id",
        "region",
        "server_partner_id",
        "server_region",
        "residency",
        "policy_data",
    ),
    "sources": ("mode", "grace_seconds"),
    "seal": ("enabled",),
    "stores": ("redis_stream_max",),
}

#: Deciding fields added after records were first written, with the value every run before
#: them computed with (not today's default): a record without the field is applied with it.
LEGACY: Mapping[tuple[str, str], Any] = {("score", "close_on"): "signal"}

#: Files the output depends on, recorded by hash: checked by a replay, never restored.
INPUTS = ("policy_bundle", "drift_baseline")


class SettingsReason(enum.StrEnum):
    """Why a replay cannot compute with the original's settings (an operator's error, not a
    record's: these are not :class:`~core.reasons.ReasonCode` members, whose list the lake's
    golden data is drawn from)."""

    #: The range holds commits landed with different settings, or with and without a record.
    REPLAY_SETTINGS_CHANGED = "REPLAY_SETTINGS_CHANGED"
    #: A file the output depends on (policy bundle, drift baseline) differs from the record's.
    REPLAY_INPUT_CHANGED = "REPLAY_INPUT_CHANGED"
    #: A record that cannot be read or applied: gone, damaged, a newer format, unknown fields.
    REPLAY_SETTINGS_UNREADABLE = "REPLAY_SETTINGS_UNREADABLE"


class ReplaySettingsError(ConfigError):
    """A replay cannot compute with the original's settings; ``reason`` says why, and the
    message starts with it."""

    def __init__(self, reason: SettingsReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; :class:`ConfigError` when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise ConfigError(msg) from exc


@dataclasses.dataclass(frozen=True, slots=True)
class OutputSettings:
    """One run's deciding settings (``values``: section -> field -> value) and input hashes."""

    values: Mapping[str, Mapping[str, Any]]
    inputs: Mapping[str, str]

    def dump(self) -> str:
        """The canonical form: compact JSON, keys sorted (the same settings, the same bytes)."""
        data = {"format": FORMAT, "inputs": dict(self.inputs), "settings": self.values}
        return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of :meth:`dump`: the record's name."""
        return hashlib.sha256(self.dump().encode()).hexdigest()

    @classmethod
    def parse(cls, raw: str) -> OutputSettings:
        """A record written by :meth:`dump`; :class:`ReplaySettingsError` for anything else."""
        try:
            data = json.loads(raw)
            fmt = data["format"]
            values = {str(s): dict(fields) for s, fields in data["settings"].items()}
            inputs = {str(k): str(v) for k, v in data["inputs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"a settings record is not in the form this engine writes ({exc})"
            raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_UNREADABLE, msg) from None
        if fmt != FORMAT:
            msg = f"a settings record has format {fmt!r}; this engine reads format {FORMAT}"
            raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_UNREADABLE, msg)
        return cls(values, inputs)

    def apply(self, settings: Settings) -> tuple[Settings, list[str]]:
        """``settings`` with every recorded value in place of its own, and the deciding fields
        the record does not hold (a record of an older release: those keep ``settings``' value).

        :class:`ReplaySettingsError` for a recorded field this engine does not know, or a value
        its rules refuse (the record cannot be applied as written)."""
        out = settings
        for section, fields in sorted(self.values.items()):
            unknown = sorted(set(fields) - set(DECIDING.get(section, ())))
            if unknown:
                names = ", ".join(f"{section}.{f}" for f in unknown)
                msg = f"the settings record holds {names}, which this engine does not apply"
                raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_UNREADABLE, msg)
            try:
                out = out.with_changes(section, **fields)
            except ValueError as exc:
                msg = f"the settings record's {section} values are refused: {exc}"
                raise ReplaySettingsError(SettingsReason.REPLAY_SETTINGS_UNREADABLE, msg) from None
        missing: list[str] = []
        for part, deciding in DECIDING.items():
            for name in deciding:
                if name in self.values.get(part, {}):
                    continue
                legacy = LEGACY.get((part, name), _NO_LEGACY)
                if legacy is _NO_LEGACY:
                    missing.append(f"{part}.{name}")
                else:  # a record older than the field: the run computed with its old value
                    out = out.with_changes(part, **{name: legacy})
        return out, missing


_NO_LEGACY: Any = object()


def output_settings(
    settings: Settings, policy_version: str, baseline: str | None = None
) -> OutputSettings:
    """The deciding settings of a flow built from ``settings`` with the policy bundle of
    ``policy_version``. ``baseline``: the drift baseline's SHA-256; by default that of
    ``drift.baseline_file`` (empty when none)."""
    values = {
        section: {name: getattr(getattr(settings, section), name) for name in names}
        for section, names in DECIDING.items()
    }
    if baseline is None:
        path = settings.drift.baseline_file
        baseline = file_sha256(path) if path else ""
    return OutputSettings(values, {"policy_bundle": policy_version, "drift_baseline": baseline})


def differences(recorded: OutputSettings, own: OutputSettings) -> list[str]:
    """Each deciding setting and input whose value differs between the two, as
    ``"score.tick_seconds: 1.0 recorded, 0.1 here"`` (sorted)."""
    out: list[str] = []
    for section in sorted(set(recorded.values) | set(own.values)):
        was, now = recorded.values.get(section, {}), own.values.get(section, {})
        for name in sorted(set(was) | set(now)):
            # A field the record is older than: it was computed with the field's legacy value.
            then = was.get(name, LEGACY.get((section, name)))
            if then != now.get(name):
                out.append(f"{section}.{name}: {then!r} recorded, {now.get(name)!r} here")
    for name in sorted(set(recorded.inputs) | set(own.inputs)):
        if recorded.inputs.get(name) != own.inputs.get(name):
            out.append(
                f"{name}: {recorded.inputs.get(name)!r} recorded, {own.inputs.get(name)!r} here"
            )
    return out
