"""``igflow governance check``: contracts, policies and the provenance schema agree, and a change
to one without the others fails with a reason code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.resources import avro_dir, policies_dir
from igflow.governance import Finding, check, lock, probe_value, provenance_dir

REPO = Path(__file__).resolve().parents[2]


class Checkout:
    """Copies of the shipped contracts, policies and provenance schemas, to change."""

    def __init__(self, root: Path) -> None:
        self.avro = Path(shutil.copytree(avro_dir(), root / "avro"))
        self.policies = Path(shutil.copytree(policies_dir(), root / "policies"))
        self.provenance = Path(shutil.copytree(provenance_dir(), root / "provenance"))

    def check(self) -> list[Finding]:
        return check(self.avro, self.policies, self.provenance)

    def codes(self) -> set[str]:
        return {f.code for f in self.check()}

    def add_contract_field(self, field: dict[str, object]) -> None:
        """A signal.v<N+1>.avsc: the newest contract with ``field`` appended."""
        newest = sorted(self.avro.glob("signal.v*.avsc"))[-1]
        number = int(newest.name.split(".v")[1].split(".")[0]) + 1
        schema = json.loads(newest.read_text())
        schema["fields"].append(field)
        (self.avro / f"signal.v{number}.avsc").write_text(json.dumps(schema))

    def classify(self, field: str, cls: str) -> None:
        rules = self.policies / "fields.rego"
        text = rules.read_text()
        rules.write_text(
            text.replace(
                '"selectors": "sensitive",', f'"selectors": "sensitive",\n\t"{field}": "{cls}",'
            )
        )

    def next_version(self) -> str:
        """The file name the next schema version takes (the newest's number + 1)."""
        numbers = [
            int(p.name.split(".v")[1].split(".")[0])
            for p in self.provenance.glob("manifest.v*.json")
        ]
        return f"manifest.v{max(numbers) + 1}.json"

    def new_schema_version(self, change: dict[str, object]) -> Path:
        """manifest.v<N+1>.json: the newest schema with ``change`` merged into ``properties``
        of the named section (``{"signal": {"x": {...}}}``)."""
        newest = sorted(self.provenance.glob("manifest.v*.json"))[-1]
        number = int(newest.name.split(".v")[1].split(".")[0]) + 1
        schema = json.loads(newest.read_text())
        schema["version"] = number
        schema["$id"] = schema["$id"].replace(newest.name, f"manifest.v{number}.json")
        for section, properties in change.items():
            assert isinstance(properties, dict)
            schema["properties"][section]["properties"].update(properties)
        path = self.provenance / f"manifest.v{number}.json"
        path.write_text(json.dumps(schema, indent=2))
        return path


@pytest.fixture
def repo(tmp_path: Path) -> Checkout:
    return Checkout(tmp_path)


def test_the_shipped_contracts_policies_and_provenance_schema_agree() -> None:
    assert check(avro_dir(), policies_dir(), provenance_dir()) == []


def test_a_new_contract_field_fails_until_the_rules_and_the_schema_cover_it(
    repo: Checkout,
) -> None:
    repo.add_contract_field({"name": "region", "type": "string", "default": ""})
    findings = repo.check()
    assert {f.code for f in findings} == {"FIELD_NOT_COVERED", "PROVENANCE_SCHEMA_MISMATCH"}
    assert any("'region'" in f.message and "fields.rego" in f.message for f in findings)
    assert any("signal.v3.avsc" in f.message and "region" in f.message for f in findings)
    repo.classify("region", "identifier")
    assert repo.codes() == {"PROVENANCE_SCHEMA_MISMATCH"}  # the rules alone are not enough
    new = repo.new_schema_version({"signal": {"region": {"type": "string"}}})
    assert repo.codes() == {"PROVENANCE_SCHEMA_UNLOCKED"}
    assert lock(repo.provenance) == [new.name]
    assert repo.check() == []


def test_a_changed_field_type_fails(repo: Checkout) -> None:
    v2 = repo.avro / "signal.v2.avsc"
    schema = json.loads(v2.read_text())
    for field in schema["fields"]:
        if field["name"] == "value":
            field["type"] = "string"
    v2.write_text(json.dumps(schema))
    (finding,) = repo.check()
    assert finding.code == "PROVENANCE_SCHEMA_MISMATCH"
    assert "signal/value" in finding.message and "number" in finding.message


def test_a_field_class_the_rules_do_not_define_fails(repo: Checkout) -> None:
    repo.add_contract_field({"name": "note", "type": "string", "default": ""})
    repo.classify("note", "secret")
    repo.new_schema_version({"signal": {"note": {"type": "string"}}})
    lock(repo.provenance)
    (finding,) = repo.check()
    assert finding.code == "FIELD_CLASS_UNKNOWN" and "'secret'" in finding.message


def test_a_rule_for_a_field_no_contract_has_is_stale(repo: Checkout) -> None:
    repo.classify("gone", "identifier")
    (finding,) = repo.check()
    assert finding.code == "FIELD_RULE_STALE" and "'gone'" in finding.message


def test_a_new_policy_tag_fails_until_the_schema_declares_it(repo: Checkout) -> None:
    rego = repo.policies / "tenancy.rego"
    rego.write_text(
        rego.read_text().replace(
            '"residency": "US",', '"residency": "US",\n\t"classification": "unclassified",'
        )
    )
    findings = repo.check()
    assert {f.code for f in findings} == {"PROVENANCE_SCHEMA_MISMATCH"}
    assert all("tags" in f.message and "classification" in f.message for f in findings)
    repo.new_schema_version({"tags": {"classification": {"enum": ["unclassified"]}}})
    lock(repo.provenance)
    assert repo.check() == []


def test_a_tag_value_the_schema_does_not_allow_fails(repo: Checkout) -> None:
    data = repo.policies / "tenancy.json"
    document = json.loads(data.read_text())
    document["tenancy"]["tenants"]["tenant-07"] = {"residency": "MARS"}
    data.write_text(json.dumps(document))
    (finding,) = repo.check()
    assert finding.code == "PROVENANCE_SCHEMA_MISMATCH"
    assert "'tenant-07'" in finding.message and "tags/residency" in finding.message


def test_a_published_schema_version_never_changes(repo: Checkout) -> None:
    v1 = repo.provenance / "manifest.v1.json"
    v1.write_text(v1.read_text().replace('"minLength": 1', '"minLength": 2', 1))
    (finding,) = repo.check()
    assert finding.code == "PROVENANCE_SCHEMA_EDITED" and repo.next_version() in finding.message
    assert lock(repo.provenance) == []  # the lock never rewrites a published version
    assert repo.codes() == {"PROVENANCE_SCHEMA_EDITED"}


def redact_rules(repo: Checkout, tenants: dict[str, dict[str, object]]) -> None:
    data = repo.policies / "redaction.json"
    data.write_text(json.dumps({"redaction": {"tenants": tenants}}))


def test_redaction_rules_the_contract_and_the_step_allow_pass(repo: Checkout) -> None:
    redact_rules(repo, {"tenant-07": {"selectors": "hash", "signal_id": "hash", "type": "mask"}})
    assert repo.check() == []


def test_a_redaction_rule_for_a_field_no_contract_has_fails(repo: Checkout) -> None:
    redact_rules(repo, {"tenant-07": {"email": "hash", "selectors": "drop"}})
    (finding,) = repo.check()
    assert finding.code == "REDACTION_FIELD_UNKNOWN"
    assert "'email'" in finding.message and "'tenant-07'" in finding.message


@pytest.mark.parametrize(
    ("field", "rule"),
    [("signal_id", "mask"), ("type", "drop"), ("selectors", "shred"), ("tenant_id", "hash")],
)
def test_a_redaction_rule_its_field_does_not_allow_fails(
    repo: Checkout, field: str, rule: str
) -> None:
    redact_rules(repo, {"tenant-07": {field: rule}})
    (finding,) = repo.check()
    assert finding.code == "REDACTION_RULE_INVALID" and f"'{field}'" in finding.message


def test_a_redaction_rule_for_a_new_contract_field_fails_until_the_step_allows_one(
    repo: Checkout,
) -> None:
    repo.add_contract_field({"name": "region", "type": "string", "default": ""})
    repo.classify("region", "descriptor")
    repo.new_schema_version({"signal": {"region": {"type": "string"}}})
    lock(repo.provenance)
    assert repo.check() == []
    redact_rules(repo, {"tenant-07": {"region": "mask"}})
    assert repo.codes() == {"REDACTION_RULE_INVALID"}  # operators/redact.py ALLOWED decides


def test_a_missing_redaction_policy_fails(repo: Checkout) -> None:
    (repo.policies / "redaction.rego").unlink()
    assert repo.codes() == {"POLICY_MISSING"}


def test_a_missing_field_rules_file_fails(repo: Checkout) -> None:
    (repo.policies / "fields.rego").unlink()
    assert repo.codes() == {"POLICY_MISSING"}


def test_probe_values_follow_the_avro_types() -> None:
    assert probe_value(["null", "double"]) == 0.5
    assert probe_value({"type": "long", "logicalType": "timestamp-micros"}) == 1
    assert probe_value({"type": "array", "items": "string"}) == ["probe"]
    assert probe_value({"type": "enum", "name": "E", "symbols": ["A", "B"]}) == "A"
    assert probe_value("null") is None


def test_the_command_exits_1_with_the_reasons_and_0_when_they_agree(repo: Checkout) -> None:
    repo.add_contract_field({"name": "region", "type": "string", "default": ""})
    command = [sys.executable, "-m", "igflow.cli", "governance", "check"]
    folders = ["--avro", str(repo.avro), "--policies", str(repo.policies)]
    folders += ["--provenance", str(repo.provenance)]
    done = subprocess.run([*command, *folders], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "FIELD_NOT_COVERED: field 'region'" in done.stderr
    assert "Traceback" not in done.stderr
    shipped = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert shipped.returncode == 0, shipped.stderr
    assert "agree" in shipped.stdout


def test_the_redaction_command_shows_each_tenants_rules(repo: Checkout) -> None:
    redact_rules(repo, {"tenant-07": {"selectors": "drop", "signal_id": "hash"}})
    command = [sys.executable, "-m", "igflow.cli", "governance", "redaction"]
    command += ["--policies", str(repo.policies)]
    named = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    asked = subprocess.run(
        [*command, "--tenant", "tenant-01", "--tenant", "tenant-07"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in asked.stdout.splitlines()]
    assert [(x["tenant_id"], x["rules"]) for x in lines] == [
        ("tenant-01", {}),
        ("tenant-07", {"selectors": "drop", "signal_id": "hash"}),
    ]
    assert [json.loads(line) for line in named.stdout.splitlines()] == lines[1:]
    redact_rules(repo, {"tenant-07": {"signal_id": "mask"}})
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode != 0 and "tenant-07" in refused.stderr
    assert "Traceback" not in refused.stderr
