"""The dashboards' pure parts: SVG charts, the panels' HTML, the page shell's security headers,
and the tenant's partition (Kafka's murmur2, for the lag of the tenant's partition)."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET

import pytest

from api import dashboard, dashboard_data
from api.svg_plot import line_chart, nice_ceiling
from core import slo
from core.partitioning import murmur2, partition_of

START, END = 1_700_000_000.0, 1_700_003_600.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Kafka's UtilsTest.testMurmur2 values (org.apache.kafka.common.utils).
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_is_kafkas(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_a_tenant_has_one_partition_among_them() -> None:
    assert {partition_of(f"tenant-{i:02d}".encode(), 4) for i in range(40)} == {0, 1, 2, 3}
    assert partition_of(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (0.03, 0.05), (0.1, 0.1), (7, 10), (120, 200), (2400, 2500)]
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_a_chart_draws_one_path_per_series_inside_its_plot_area() -> None:
    svg = line_chart(
        "Throughput <of> & tenant",
        [("a", [(START, 1.0), (START + 1800, 3.0), (END, 2.0)]), ("b", [(END, 0.5)]), ("c", [])],
        "signals/s",
        START,
        END,
    )
    root = ET.fromstring(svg)  # well-formed XML: every text escaped
    ns = "{http://www.w3.org/2000/svg}"
    paths = root.findall(f"{ns}path")
    assert len(paths) == 2  # the empty series draws nothing
    for path in paths:
        d = path.get("d") or ""
        assert d.startswith("M") and " L" in d
        for x, y in re.findall(r"([\d.]+),([\d.]+)", d):
            assert 54 <= float(x) <= 550 and 28 <= float(y) <= 176
    assert "Throughput <of> & tenant" in "".join(root.itertext())


def test_an_empty_chart_says_so() -> None:
    svg = line_chart("Lag", [("lag", [])], "records", START, END)
    assert "<path" not in svg and "no data in this range" in svg


def _row(tenant: str, slo_name: str, left: float) -> slo.BudgetRow:
    return slo.BudgetRow(tenant, "standard", slo_name, 0.999, 1 - 0.001 * (1 - left), left, 2.0)


def test_the_tenant_panel_escapes_and_flags_a_spent_budget() -> None:
    plot = dashboard_data.Plot("T", "s", (("x", ((START, 1.0), (END, 2.0))),))
    view = dashboard_data.TenantView(
        tenant_id="<script>alert(1)</script>",
        tier="standard",
        partition=2,
        throughput=12.5,
        freshness_p95=None,
        probe_p95=0.4,
        lag=3.0,
        budgets=(_row("t", "freshness", -0.5), _row("t", "ingest_availability", 0.75)),
        plots=(plot,),
        start=START,
        end=END,
    )
    html = dashboard.render_tenant(view)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "-50.000% SPENT" in html and "75.000%" in html and "2.00x" in html
    assert html.count('<path class="series"') == 1


def test_the_rollup_links_each_tenant_and_counts_spent_budgets() -> None:
    lines = (
        dashboard_data.TenantLine(
            "tenant-00", "vip", 3.0, 0.2, _row("tenant-00", "freshness", -1), 4.0
        ),
        dashboard_data.TenantLine("tenant-01", "standard", None, None, None, None),
    )
    html = dashboard.render_platform(dashboard_data.PlatformView(lines, 0.0, (), START, END))
    assert '<a href="/dashboard/tenants/tenant-00">tenant-00</a>' in html
    assert '<a href="/dashboard/tenants/tenant-01">' in html
    assert "<b>1</b><span>budgets spent</span>" in html


def test_the_shell_carries_no_data_and_allows_only_its_own_script() -> None:
    response = dashboard._shell("t", "/dashboard/panels/tenants/t")
    csp = response.headers["content-security-policy"]
    body = bytes(response.body).decode()
    script = re.search(r"<script>(.*)</script>", body, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
