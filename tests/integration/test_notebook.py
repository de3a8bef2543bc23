"""The analysts' notebook runs headless against what the flow landed, and draws its plot."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from core.settings import Settings
from igflow.admin import write_pyiceberg_config
from igflow.workload import WorkloadSpec
from tests.integration.conftest import REPO, finish, igflow, produce_workload


def test_inspect_signals_notebook_executes(
    it_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A few invalid records, sealed in the quarantine (README, "What is encrypted where").
    produce_workload(it_settings, WorkloadSpec(tenants=4, count=250, seed=2, invalid=0.02))
    finish(igflow(it_settings, "run"))  # sealing is on by default
    home = tmp_path / "pyiceberg"
    write_pyiceberg_config(it_settings, home)
    plot = tmp_path / "plot.png"
    monkeypatch.setenv("PYICEBERG_HOME", str(home))
    monkeypatch.setenv("IGFLOW_LAKE_NAMESPACE", it_settings.lake.namespace)
    monkeypatch.setenv("IGFLOW_NOTEBOOK_PLOT", str(plot))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The key store's KMS root key is the stack's (the kernel runs in tmp_path).
    monkeypatch.setenv("IGFLOW_KEYS_ROOT_KEY_FILE", str(it_settings.root_key_file))
    if it_settings.tls.enabled:  # and so is the CA its clients verify the stores against
        monkeypatch.setenv("IGFLOW_TLS_CA_FILE", str(it_settings.tls_ca_file))

    nb = nbformat.read(REPO / "notebooks" / "inspect_signals.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "1,000 rows, 4 tenants" in outputs
    quarantined = re.search(r"([0-9,]+) quarantined rows, ([0-9,]+) sealed payloads", outputs)
    assert quarantined is not None, outputs
    rows, sealed = (int(n.replace(",", "")) for n in quarantined.groups())
    assert rows > 0 and sealed == rows  # every reject of this workload carries a tenant
    assert f"{rows:,} opened with the tenants' keys" in outputs
    assert plot.stat().st_size > 5_000
