"""The deciding settings' record: canonical, exact, named in every commit, applied by a replay."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given
from pyiceberg.catalog import Catalog

from core.errors import SchemaError
from core.output_settings import (
    DECIDING,
    FORMAT,
    OutputSettings,
    ReplaySettingsError,
    SettingsReason,
    differences,
    output_settings,
)
from core.records import Decoded, PolicyTags, Provenance, Signal, Tagged
from core.settings import Settings
from replay.settings import original_settings, own_record
from sinks.iceberg import IcebergAppender, ensure_table
from sinks.lake_tables import SIGNALS
from sinks.settings_record import SETTINGS_KEY, read_settings, settings_history

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "coherence.signals.v1"
TAGS = PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US")


def _item(partition: int, offset: int, tenant: str = "tenant-00") -> Tagged:
    ts = T0 + timedelta(seconds=offset)
    signal = Signal(tenant, f"s-{partition}-{offset}", "latency", 0.5, None, "src", ts)
    decoded = Decoded(signal, Provenance(TOPIC, partition, offset, 1, "0" * 64))
    return Tagged(decoded, TAGS, "p" * 64, f"prov-{partition}-{offset}")


def test_every_deciding_setting_is_a_field_of_its_section() -> None:
    settings = Settings()
    for section, names in DECIDING.items():
        for name in names:
            getattr(getattr(settings, section), name)  # AttributeError if one is misnamed


@given(
    tick=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    ttl=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    batch=st.integers(min_value=1, max_value=1 << 40),
)
def test_the_record_reads_back_exactly(tick: float, ttl: float, batch: int) -> None:
    settings = (
        Settings()
        .with_changes("score", tick_seconds=tick)
        .with_changes("dedupe", ttl_seconds=ttl)
        .with_changes("drift", batch_size=batch)
    )
    record = output_settings(settings, "v" * 64, "")
    again = OutputSettings.parse(record.dump())
    assert again == record
    assert again.dump() == record.dump()
    applied, missing = again.apply(Settings())
    assert missing == []
    assert applied.score.tick_seconds == tick
    assert applied.dedupe.ttl_seconds == ttl
    assert applied.drift.batch_size == batch
    # Nothing else moves: the non-deciding settings stay the replay's own.
    assert applied.lake == Settings().lake


def test_the_record_is_small_and_does_not_name_secrets() -> None:
    settings = Settings().with_changes("quarantine", release_key="s3cret-key")
    text = output_settings(settings, "v" * 64, "").dump()
    assert "s3cret" not in text
    assert "password" not in text
    assert len(text.encode()) < 1500


def test_a_record_this_engine_cannot_apply_is_refused_with_its_reason() -> None:
    record = output_settings(Settings(), "v" * 64, "")
    data = json.loads(record.dump())
    with pytest.raises(ReplaySettingsError) as newer:
        OutputSettings.parse(json.dumps({**data, "format": FORMAT + 1}))
    assert newer.value.reason is SettingsReason.REPLAY_SETTINGS_UNREADABLE
    assert str(newer.value).startswith("REPLAY_SETTINGS_UNREADABLE: ")
    with pytest.raises(ReplaySettingsError):
        OutputSettings.parse("not json")
    data["settings"]["score"]["no_such_field"] = 1
    with pytest.raises(ReplaySettingsError, match=r"score\.no_such_field"):
        OutputSettings.parse(json.dumps(data)).apply(Settings())
    data["settings"]["score"] = {"tick_seconds": -1.0}
    with pytest.raises(ReplaySettingsError, match="REPLAY_SETTINGS_UNREADABLE"):
        OutputSettings.parse(json.dumps(data)).apply(Settings())


def test_a_record_of_fewer_fields_applies_what_it_holds_and_says_what_it_lacks() -> None:
    record = OutputSettings({"score": {"tick_seconds": 1.0}}, {})
    applied, missing = record.apply(Settings())
    assert applied.score.tick_seconds == 1.0
    assert "score.window_seconds" in missing
    assert "score.tick_seconds" not in missing


def test_differences_name_each_setting_and_file() -> None:
    a = output_settings(Settings().with_changes("score", tick_seconds=1.0), "a" * 64, "")
    b = output_settings(Settings(), "b" * 64, "")
    assert differences(a, b) == [
        "score.tick_seconds: 1.0 recorded, 0.1 here",
        f"policy_bundle: {'a' * 64!r} recorded, {'b' * 64!r} here",
    ]
    assert differences(a, a) == []


def _land(catalog: Catalog, record: OutputSettings | None, items: list[Tagged]) -> None:
    table = ensure_table(catalog, "coherence", SIGNALS)
    IcebergAppender(table, SIGNALS, settings=record).append(items)


def test_each_commit_names_its_record_and_its_file_holds_it(
    catalog: Catalog, lake_settings: Settings
) -> None:
    record = own_record(lake_settings.with_changes("score", tick_seconds=1.0))
    table = ensure_table(catalog, "coherence", SIGNALS)
    appender = IcebergAppender(table, SIGNALS, settings=record)
    appender.append([_item(0, o) for o in range(5)])
    appender.append([_item(0, o) for o in range(5, 9)] + [_item(1, 0, "tenant-01")])
    history = list(settings_history(table, TOPIC))
    assert [c.sha256 for c in history] == [record.sha256] * 2
    assert history[0].spans == ((0, 0, 4),)
    assert history[1].spans == ((0, 5, 8), (1, 0, 0))
    # The summary holds the hash alone (64 hex digits), whatever the tenants or settings.
    props = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert props[SETTINGS_KEY] == record.sha256
    assert read_settings(table, record.sha256) == record


def test_a_replay_applies_the_record_of_its_range(
    catalog: Catalog, lake_settings: Settings
) -> None:
    original = lake_settings.with_changes("score", tick_seconds=1.0).with_changes(
        "dedupe", ttl_seconds=60.0
    )
    _land(catalog, own_record(original), [_item(0, o) for o in range(10)])
    applied, used = original_settings(lake_settings, catalog, {0: 0}, {0: 10})
    assert (applied.score.tick_seconds, applied.dedupe.ttl_seconds) == (1.0, 60.0)
    assert used.source == "original"
    assert used.records == (own_record(original).sha256,)
    assert used.differences == (
        "dedupe.ttl_seconds: 60.0 recorded, 86400.0 here",
        "score.tick_seconds: 1.0 recorded, 0.1 here",
    )
    # The operator's override: its own settings, the differences reported.
    same, current = original_settings(lake_settings, catalog, {0: 0}, {0: 10}, use="current")
    assert same is lake_settings
    assert current.source == "current"
    assert "score.tick_seconds: 1.0 recorded, 0.1 here" in current.differences


def test_a_range_across_a_change_of_settings_is_refused(
    catalog: Catalog, lake_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _land(catalog, None, [_item(0, o) for o in range(5)])  # landed before records existed
    first = own_record(lake_settings.with_changes("score", tick_seconds=1.0))
    _land(catalog, first, [_item(0, o) for o in range(5, 10)])
    _land(catalog, own_record(lake_settings), [_item(0, o) for o in range(10, 15)])

    with pytest.raises(ReplaySettingsError) as across:
        original_settings(lake_settings, catalog, {0: 7}, {0: 12})
    assert across.value.reason is SettingsReason.REPLAY_SETTINGS_CHANGED
    assert f"record {first.sha256[:12]} at offsets 0:5-9" in str(across.value)
    with pytest.raises(ReplaySettingsError, match="no record at offsets 0:0-4"):
        original_settings(lake_settings, catalog, {0: 0}, {0: 6})
    # Each part on its own: its record, or none (today's behaviour, warned).
    applied, used = original_settings(lake_settings, catalog, {0: 5}, {0: 10})
    assert applied.score.tick_seconds == 1.0
    assert used.records == (first.sha256,)
    with caplog.at_level(logging.WARNING, logger="replay.settings"):
        applied, used = original_settings(lake_settings, catalog, {0: 0}, {0: 5})
        assert (applied, used.source) == (lake_settings, "unrecorded")
        assert "landed before settings were recorded" in caplog.text
        caplog.clear()
        # A range the original holds no row of: nothing recorded, nothing to reproduce.
        _applied, used = original_settings(lake_settings, catalog, {0: 100}, {0: 200})
        assert used.source == "unrecorded"
        assert "the original holds no row of this range" in caplog.text
    # A partition named only in `start` reads to the end: it spans every record.
    with pytest.raises(ReplaySettingsError, match="REPLAY_SETTINGS_CHANGED"):
        original_settings(lake_settings, catalog, {0: 5}, {})
    # The override replays across it, reporting the differences.
    _same, used = original_settings(lake_settings, catalog, {0: 0}, {0: 15}, use="current")
    assert used.source == "current"
    assert len(used.records) == 2


def test_a_changed_policy_bundle_refuses_the_replay(
    catalog: Catalog, lake_settings: Settings
) -> None:
    record = output_settings(lake_settings, "0" * 64, "")  # a bundle that is not this one
    _land(catalog, record, [_item(0, o) for o in range(3)])
    with pytest.raises(ReplaySettingsError) as changed:
        original_settings(lake_settings, catalog, {0: 0}, {0: 3})
    assert changed.value.reason is SettingsReason.REPLAY_INPUT_CHANGED
    assert "policy_bundle" in str(changed.value)
    # A derivation of scores needs the score settings alone: the bundle is not checked.
    applied, used = original_settings(lake_settings, catalog, sections=("score",))
    assert used.source == "original"
    assert applied.score == lake_settings.score


def test_a_commit_touches_a_range_by_the_rows_it_holds_not_its_lanes_gaps(
    catalog: Catalog, lake_settings: Settings
) -> None:
    """Tenants interleave in a partition: a lane's mark moving from 3 to 7 does not mean the
    commit holds offset 4 (another tenant's, landed before)."""
    first = own_record(lake_settings.with_changes("score", tick_seconds=1.0))
    _land(catalog, first, [_item(0, o, f"tenant-0{o % 2}") for o in range(5)])
    _land(catalog, own_record(lake_settings), [_item(0, o, f"tenant-0{o % 2}") for o in (5, 6, 7)])
    applied, used = original_settings(lake_settings, catalog, {0: 0}, {0: 5})
    assert used.records == (first.sha256,)
    assert applied.score.tick_seconds == 1.0
    with pytest.raises(ReplaySettingsError, match="REPLAY_SETTINGS_CHANGED"):
        original_settings(lake_settings, catalog, {0: 0}, {0: 6})


def test_a_derivation_neither_reads_nor_hashes_the_input_files(
    catalog: Catalog, lake_settings: Settings, tmp_path: Path
) -> None:
    _land(catalog, own_record(lake_settings), [_item(0, o) for o in range(3)])
    # Files that cannot be read: hashing them would fail, so a derivation must not hash them.
    gone = lake_settings.with_changes("tenancy", policies_dir=str(tmp_path / "none")).with_changes(
        "drift", baseline_file=str(tmp_path / "none.json")
    )
    applied, used = original_settings(gone, catalog, sections=("score",))
    assert (used.source, applied.score) == ("original", lake_settings.score)
    with pytest.raises(SchemaError, match="policy folder missing"):  # a full replay checks them
        original_settings(gone, catalog, {0: 0}, {0: 3})


def test_a_record_from_before_close_on_replays_with_signal_closing() -> None:
    """``score.close_on`` came after records were written: a record without it was computed
    with the old behaviour, ``"signal"``, and is applied so (not with today's default), and
    no difference is reported for it."""
    assert Settings().score.close_on == "horizon"
    old = output_settings(Settings(), "a" * 64, "")
    values = {s: dict(v) for s, v in old.values.items()}
    del values["score"]["close_on"]
    record = OutputSettings(values, old.inputs)
    applied, missing = record.apply(Settings())
    assert applied.score.close_on == "signal"
    assert "score.close_on" not in missing
    assert (
        differences(
            record,
            output_settings(Settings().with_changes("score", close_on="signal"), "a" * 64, ""),
        )
        == []
    )
    assert differences(record, old) == ["score.close_on: 'signal' recorded, 'horizon' here"]
    # A record that holds it applies what it holds.
    new = OutputSettings(old.values, old.inputs)
    assert (
        new.apply(Settings().with_changes("score", close_on="signal"))[0].score.close_on
        == "horizon"
    )
