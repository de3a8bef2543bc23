"""A fixed sequence of lake appends, written out exactly: data file bytes, summaries, results.

``tests/data/lake_golden.json`` holds what :class:`~sinks.iceberg.IcebergAppender` wrote for it
*before* the lake sink went columnar (issue 15): per append the SHA-256 of every data file it
added, its ``igflow.*`` snapshot properties and its :class:`~sinks.iceberg.AppendResult`.
``test_lake_golden.py`` recomputes it and asserts equality, so a faster sink that changes one
byte of a Parquet file, one ledger mark or one digest fails (and a replay of a table written by
the code before could no longer come out byte-identical). Regenerate (only for an intended
change of output, and say so in the commit):

    .venv/bin/python -m tests.unit.lake_golden --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from core.reasons import ReasonCode
from core.records import (
    Decoded,
    DeconflictionResult,
    DriftVerdict,
    PolicyTags,
    Provenance,
    Quarantined,
    RawRecord,
    Rejected,
    ScoreChange,
    Signal,
    Tagged,
    input_hash,
)
from sinks.iceberg import AppendResult, IcebergAppender, ensure_table
from sinks.lake_tables import (
    DECONFLICTION,
    LEGACY_PARTITION_SPECS,
    QUARANTINE,
    SCORES,
    SIGNALS,
    TableDef,
)
from sinks.ledger_history import HISTORY_KEY

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "lake_golden.json"

T0 = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)
TOPICS = ("coherence.signals.v1", "other.signals")
TENANTS = ("tenant-00", "tenant-01", "t\u00e9nant-02", "tenant-03")
TAGS = (
    PolicyTags("benchmarking", "standard-365d", "Restricted-TOS", "US"),
    PolicyTags("research", "short-30d", "Open", "EU"),
)


def _raw(rng: random.Random, topic: str, partition: int, offset: int) -> RawRecord:
    value = rng.randbytes(rng.randrange(0, 40)) if rng.random() > 0.05 else None
    key = rng.randbytes(4) if rng.random() > 0.3 else None
    return RawRecord(topic, partition, offset, key, value, 1_772_409_540_000 + offset)


def _decoded(rng: random.Random, topic: str, partition: int, offset: int) -> Decoded:
    raw = _raw(rng, topic, partition, offset)
    tenant = rng.choice(TENANTS)
    signal = Signal(
        tenant,
        f"s-{topic[:2]}-{partition}-{offset}",
        rng.choice(("latency", "errors", "\u00fcber")),
        rng.choice((0.0, -0.0, 1e-300, rng.uniform(-5, 5), 1.5e300)),
        None if rng.random() < 0.3 else rng.uniform(0, 3),
        rng.choice(("src-a", "src-b", "")),
        T0 + timedelta(seconds=rng.randrange(0, 180), microseconds=rng.randrange(0, 10**6)),
    )
    prov = Provenance(topic, partition, offset, rng.choice((1, 2, 7)), input_hash(raw.value))
    return Decoded(signal, prov, raw.timestamp_ms, raw)


def _tagged(rng: random.Random, topic: str, partition: int, offset: int) -> Tagged:
    d = _decoded(rng, topic, partition, offset)
    return Tagged(d, rng.choice(TAGS), "p" * 64, f"prov-{d.provenance.kafka_offset}")


def _score(rng: random.Random, topic: str, partition: int, offset: int) -> ScoreChange:
    d = _decoded(rng, topic, partition, offset)
    score = rng.uniform(0, 100)
    return ScoreChange(
        d.signal.tenant_id,
        score,
        rng.choice(("HEALTHY", "WARN", "CRITICAL")),
        d.signal.ts,
        rng.randrange(1, 500),
        rng.uniform(0, 500),
        f"prov-{offset}",
        d.provenance,
        Decimal(f"{score:.2f}"),
        rng.randrange(0, 10**6),
    )


def _quarantine(rng: random.Random, topic: str, partition: int, offset: int) -> Any:
    if rng.random() < 0.5:
        stage = rng.choice(("decode", "validate", "dedupe"))
        return Rejected(
            rng.choice(list(ReasonCode)),
            f"detail {offset}",
            _raw(rng, topic, partition, offset),
            stage,
            None if stage == "decode" else rng.choice(TENANTS),
            None if stage == "decode" else 2,
        )
    d = _decoded(rng, topic, partition, offset)
    verdict = DriftVerdict(
        f"batch-{offset // 7}",
        d.signal.tenant_id,
        rng.choice((d.signal.type, "*schema")),
        7,
        rng.random(),
        None if rng.random() < 0.5 else rng.random(),
        rng.random(),
        None,
        rng.choice((None, ReasonCode.DRIFT_DETECTED)),
    )
    return Quarantined(d, verdict)


def _window(rng: random.Random, topic: str, partition: int, offset: int) -> DeconflictionResult:
    d = _decoded(rng, topic, partition, offset)
    start = T0 + timedelta(minutes=rng.randrange(0, 3))
    matched = tuple(f"sel-{i}" for i in range(rng.randrange(0, 3)))
    return DeconflictionResult(
        d.signal.tenant_id,
        start,
        start + timedelta(minutes=1),
        rng.choice(("full_intersection", "cardinality")),
        "partner-a",
        rng.randrange(0, 9),
        matched,
        None if rng.random() < 0.3 else len(matched),
        None if rng.random() < 0.7 else "PSI_UNAVAILABLE",
        rng.randrange(1, 50),
        rng.randrange(0, 3),
        rng.randrange(0, 3),
        offset - 5,
        offset,
        "d" * 64,
        f"prov-{offset}",
        d.provenance,
        "p" * 64,
        None if rng.random() < 0.5 else 3,
        None if rng.random() < 0.5 else "3.1.abcd",
    )


MAKERS = {
    SIGNALS.name: _tagged,
    SCORES.name: _score,
    QUARANTINE.name: _quarantine,
    DECONFLICTION.name: _window,
}


#: What the golden file holds: per key, the table (its layout) and the seed of its batches. The
#: signals and scores tables in the layout they were recorded in (before session 21: by tenant,
#: :data:`~sinks.lake_tables.LEGACY_PARTITION_SPECS`), which tables created then keep; then the
#: same batches in today's layout (by day and residency, by day), recorded when it came.
TABLES: tuple[tuple[str, TableDef[Any], int], ...] = (
    ("signals", replace(SIGNALS, partition_spec=LEGACY_PARTITION_SPECS["signals"]), 0),
    ("scores", replace(SCORES, partition_spec=LEGACY_PARTITION_SPECS["scores"]), 1),
    ("quarantine", QUARANTINE, 2),
    ("deconfliction", DECONFLICTION, 3),
    ("signals@day-residency", SIGNALS, 0),
    ("scores@day", SCORES, 1),
)


def _batches(table: TableDef[Any], seed: int) -> list[list[Any]]:
    """Batches as Bytewax could deliver them: partitions interleaved, tenants shuffled within
    a batch, the same record twice in a batch, a resume re-delivering what landed."""
    rng = random.Random(seed)
    make = MAKERS[table.name]
    records = [
        make(rng, topic, partition, offset)
        for topic in TOPICS
        for partition in range(3)
        for offset in range(rng.randrange(20, 60))
    ]
    rng.shuffle(records)
    # Each lane's items in offset order (what the ledger relies on), lanes interleaved.
    records.sort(key=lambda r: table.provenance(r).kafka_offset)
    batches: list[list[Any]] = []
    i = 0
    while i < len(records):
        n = rng.randrange(1, 50)
        batch = records[i : i + n]
        rng.shuffle(batch)
        batch.sort(key=lambda r: table.provenance(r).kafka_offset)
        if batch and rng.random() < 0.3:
            batch.append(batch[-1])  # the same item twice in one batch (a tie in the order)
        batches.append(batch)
        if rng.random() < 0.25 and i > 0:
            batches.append(records[max(0, i - 40) : i + n // 2])  # a resume re-delivering
        i += n
    return batches


def _result(result: AppendResult) -> dict[str, Any]:
    return {
        "appended": result.appended,
        "skipped": result.skipped,
        "per_tenant": dict(sorted(result.per_tenant.items())),
        "ledger": sorted([*k, v] for k, v in result.ledger.items()),
    }


def _added_files(table: Table) -> list[str]:
    snapshot = table.current_snapshot()
    assert snapshot is not None
    hashes = []
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.snapshot_id != snapshot.snapshot_id:
                continue
            path = entry.data_file.file_path.removeprefix("file://")
            hashes.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return sorted(hashes)


def _properties(table: Table, tmp: str) -> dict[str, str]:
    """The ``igflow.*`` summary properties, the temporary folder's name taken out of the paths
    of spilled values and checkpoints (their file names are their content's hash). A history
    file (``igflow.history``, sinks/ledger_history.py) holds snapshot ids, which pyiceberg draws
    at random: only how many commits it holds is compared (tests/unit/test_ledger_history.py
    tests its content)."""
    snapshot = table.current_snapshot()
    assert snapshot is not None
    props = snapshot.summary.additional_properties if snapshot.summary else {}
    out = {k: v.replace(tmp, "<tmp>") for k, v in sorted(props.items()) if k.startswith("igflow.")}
    if HISTORY_KEY in out:
        commits = json.loads(out[HISTORY_KEY])["commits"]
        out[HISTORY_KEY] = json.dumps(
            {"commits": commits, "path": "<random>", "sha256": "<random>"}
        )
    return out


def compute() -> dict[str, Any]:
    """Every table's appends over its fixed batches, as the golden file holds them."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "warehouse").mkdir()
        catalog = SqlCatalog(
            "golden",
            uri=f"sqlite:///{tmp}/catalog.db",
            warehouse=(Path(tmp) / "warehouse").as_uri(),
        )
        for key, table_def, seed in TABLES:
            # Today's layouts in a namespace of their own (the same table names).
            namespace = "golden_now" if "@" in key else "golden"
            table = ensure_table(catalog, namespace, table_def)
            appender: IcebergAppender[Any] = IcebergAppender(table, table_def, checkpoint_every=4)
            steps = []
            last = None
            for batch in _batches(table_def, seed):
                result = appender.append(batch)
                step: dict[str, Any] = {"rows": len(batch), "result": _result(result)}
                snapshot = table.current_snapshot()
                if snapshot is not None and snapshot.snapshot_id != last:
                    last = snapshot.snapshot_id
                    step["files"] = _added_files(table)
                    step["properties"] = _properties(table, tmp)
                steps.append(step)
            out[key] = steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {GOLDEN.name}")
    args = parser.parse_args()
    data = compute()
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if args.write:
        GOLDEN.write_text(text, encoding="ascii")
    else:
        print(text)


if __name__ == "__main__":
    main()
