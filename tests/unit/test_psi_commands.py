"""``igflow psi``'s pure parts: selector sources, policy data, what ``match`` prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from core.errors import ConfigError
from core.reasons import ReasonCode
from igflow.cli import main
from igflow.psi_commands import (
    outcome_document,
    policy_config,
    selectors_csv,
    selectors_table,
)
from psi import Agreement, Cardinality, Denial, Intersection, KeyId, PolicyConfig, PsiMode

POLICY = PolicyConfig(
    agreements=(
        Agreement("agency-a", regions=frozenset({"US", "GB"}), min_batch=5, max_requests=9),
        Agreement("agency-b", modes=frozenset({PsiMode.INTERSECTION_CARDINALITY})),
    ),
    min_batch=2,
    residency_allows={"US": frozenset({"US", "GB"}), "EU": frozenset({"DE"})},
)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """A CSV file with a header row."""
    lines = [",".join(header), *(",".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def selector_table(catalog: Catalog, identifier: str, columns: dict[str, list[Any]]) -> None:
    """Create the Iceberg table ``identifier`` holding ``columns`` (pyarrow-typed)."""
    data = pa.table(columns)
    catalog.create_namespace_if_not_exists(identifier.split(".")[0])
    catalog.create_table(identifier, schema=data.schema).append(data)


def test_csv_named_column_and_only_column(tmp_path: Path) -> None:
    rows = [("email", " a@x.org "), ("phone", ""), ("email", "b@x.org"), ("email", "a@x.org")]
    two = write_csv(tmp_path / "two.csv", ("kind", "selector"), rows)
    assert selectors_csv(two, "selector").items == ("a@x.org", "b@x.org")
    one = write_csv(tmp_path / "one.csv", ("selector",), [("b@x.org",), ("a@x.org",)])
    assert selectors_csv(one, None).items == ("b@x.org", "a@x.org")


@pytest.mark.parametrize(
    ("name", "column", "message"),
    [
        ("two.csv", None, "name one with --column"),
        ("two.csv", "missing", "name one with --column"),
        ("absent.csv", "selector", "No such file"),
    ],
)
def test_csv_errors(tmp_path: Path, name: str, column: str | None, message: str) -> None:
    write_csv(tmp_path / "two.csv", ("kind", "selector"), [("email", "a@x.org")])
    with pytest.raises(ConfigError, match=message):
        selectors_csv(tmp_path / name, column)


def test_table_named_column_and_only_column(catalog: Catalog) -> None:
    selector_table(catalog, "psi.two", {"selector": ["b", "a", "b"], "kind": ["x", "y", "z"]})
    assert selectors_table(catalog, "psi.two", "selector").items == ("b", "a")
    selector_table(catalog, "psi.one", {"selector": ["c"]})
    assert selectors_table(catalog, "psi.one", None).items == ("c",)


@pytest.mark.parametrize(
    ("identifier", "column", "message"),
    [
        ("psi.nulls", "selector", "null, empty or non-string"),
        ("psi.empties", "selector", "null, empty or non-string"),
        ("psi.numbers", "selector", "null, empty or non-string"),
        ("psi.sealed", "selector", "holds sealed values"),
        ("psi.nulls", None, "name one with --column"),
        ("psi.nulls", "missing", "name one with --column"),
        ("psi.absent", "selector", "psi.absent"),
        ("nowhere.absent", "selector", "nowhere.absent"),
    ],
)
def test_table_errors(catalog: Catalog, identifier: str, column: str | None, message: str) -> None:
    selector_table(catalog, "psi.nulls", {"selector": ["a", None], "kind": ["x", "y"]})
    selector_table(catalog, "psi.empties", {"selector": ["a", ""]})
    selector_table(catalog, "psi.numbers", {"selector": [1, 2]})
    selector_table(catalog, "psi.sealed", {"selector": ["a", "sealed:aWdmMQ=="]})
    with pytest.raises(ConfigError, match=message):
        selectors_table(catalog, identifier, column)


def test_policy_data_round_trips_in_any_list_order(tmp_path: Path) -> None:
    document = POLICY.document()
    document["residency_allows"]["US"].reverse()
    path = tmp_path / "psi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert policy_config(path) == POLICY


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["agreements"]["agency-a"].update(regions="US"),
        lambda d: d["agreements"]["agency-a"].update(min_batch="5"),
        lambda d: d["agreements"]["agency-a"].update(modes=["everything"]),
        lambda d: d["agreements"]["agency-a"].update(extra=1),
        lambda d: d["agreements"]["agency-a"].pop("max_requests"),
        lambda d: d.update(window=60),
        lambda d: d.pop("residency_allows"),
        lambda d: d.update(agreements=[]),
    ],
)
def test_policy_data_errors(tmp_path: Path, change: Any) -> None:
    document = POLICY.document()
    change(document)
    path = tmp_path / "psi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ConfigError, match="bad PSI policy data"):
        policy_config(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad PSI policy data"):
        policy_config(path)


def test_outcome_documents() -> None:
    key = KeyId(1, 0, 7)
    assert outcome_document(Intersection(("b", "a"), key)) == {
        "mode": "full_intersection",
        "matches": ["b", "a"],
    }
    assert outcome_document(Cardinality(3, key)) == {
        "mode": "intersection_cardinality",
        "count": 3,
    }
    assert outcome_document(Denial(ReasonCode.RATE_LIMITED)) == {"reason": "RATE_LIMITED"}


def test_match_below_the_minimum_batch_prints_only_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's own policy (default minimum batch 100) refuses before any request is sent.
    monkeypatch.setenv("IGFLOW_TLS_ENABLED", "false")  # a plain http:// server: no CA needed
    mine = write_csv(tmp_path / "mine.csv", ("selector",), [("a",), ("b",)])
    args = ["psi", "match", "--server", "http://127.0.0.1:9", "--csv", str(mine)]
    assert main(args) == 1
    assert capsys.readouterr().out == '{"reason": "THRESHOLD_NOT_MET"}\n'


@pytest.mark.parametrize("bad", ["empty set", "policy data", "max evaluations"])
def test_serve_refuses_bad_input_before_listening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    rows = [] if bad == "empty set" else [("a",)]
    args = ["psi", "serve", "--csv", str(write_csv(tmp_path / "s.csv", ("selector",), rows))]
    if bad == "policy data":
        (tmp_path / "psi.json").write_text("[]", encoding="utf-8")
        args += ["--policy-data", str(tmp_path / "psi.json")]
    if bad == "max evaluations":
        args += ["--max-evaluations", "0"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("igflow psi: ")
