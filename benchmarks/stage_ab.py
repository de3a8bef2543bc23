"""Decode's, tenant-tag's, drift's and score's batch paths against a base checkout's, in one
process (issue 15, point 2).

    .venv/bin/python benchmarks/checkouts.py <commit> /tmp/base     # the base, built
    .venv/bin/python benchmarks/stage_ab.py --against /tmp/base        # no stack needed

The base's ``operators/decode.py``, ``operators/tenancy.py``, ``operators/drift.py`` (with its
own ``drift_stats.py``) and ``operators/score.py`` are loaded beside this checkout's, on the
base's own ``core._native`` where the base has a build of it (``benchmarks/checkouts.py``
makes one; else this checkout's, which the base's code may call with arguments it no longer
takes); both sides run alternately, ``--rounds`` times, over the same records:
``SignalDecoder.decode_many`` over the raw records in batches of 1,000 (a fetch's, before the
split by tenant; a new decoder each time; for the first ``--step-ms`` only), ``tag_run`` over
the decoded signals that pass drift (the same), ``TenantDrift.push_batch`` (+ ``flush``) over
decoded signals and ``TickScore.add`` (+ ``flush``) over tagged ones, in batches of
``--batch`` split by tenant (a keyed step's batches). Their outputs must be equal (``repr``,
record by record). Workload: ``benchmarks/stages.py``'s (10 tenants, 4 types round robin, no
duplicates or invalid records), a tenant's signals ``--step-ms`` apart in event time, for each
value given. Prints CPU µs per record (garbage collector off), the medians and their ratio, and
the load average: one process, so a shared machine's load weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import core  # noqa: E402
import core._native  # noqa: E402
from benchmarks.stages import _per_tenant  # noqa: E402
from core.contracts import signal_contracts  # noqa: E402
from core.records import Decoded, RawRecord  # noqa: E402
from core.settings import Settings  # noqa: E402
from igflow.workload import WorkloadSpec, generate  # noqa: E402
from operators import decode, drift, drift_stats, score, tenancy  # noqa: E402
from operators.tenancy import TenancyPolicy, tag  # noqa: E402


def _module(name: str, source: str, path: Path) -> ModuleType:
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # (dataclasses look their module up while the class is built)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def _base_native(root: Path) -> ModuleType | None:
    """The base's own build of ``core._native`` (``core/_native.cpython-*.so`` in ``root``:
    ``pip install -e . --no-deps`` there, or a copy), or ``None``."""
    found = sorted((root / "core").glob("_native.cpython-*.so"))
    if not found:
        return None
    spec = importlib.util.spec_from_file_location("core._native", found[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)  # (another file: loaded beside this one's)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _native_of(module: ModuleType | None) -> Iterator[None]:
    """``core._native`` is ``module`` while the base's sources are executed: they then call
    their own C paths with the arguments they were written for (this checkout's extension may
    take others: a longer ``drift_run`` config). ``None``: this checkout's."""
    if module is None:
        yield
        return
    saved = sys.modules["core._native"], core._native
    sys.modules["core._native"], core._native = module, module  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.modules["core._native"], core._native = saved  # type: ignore[assignment]


def load_base(root: Path) -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """The base's drift module (importing the base's drift_stats), score, decode and tenancy
    modules, on the base's own C extension where it has one (:func:`_base_native`)."""
    native = _base_native(root)
    print(f"base C extension: {'its own' if native else 'this checkout' + chr(39) + 's'}")
    with _native_of(native):
        return _load_base(root)


def _load_base(root: Path) -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    ops = root / "operators"
    base_stats = _module(
        "base_drift_stats", (ops / "drift_stats.py").read_text(), ops / "drift_stats.py"
    )
    assert importlib.util.find_spec("operators.drift_stats") is not None
    source = (ops / "drift.py").read_text()
    rewired = source.replace("from operators.drift_stats import", "from base_drift_stats import")
    if rewired == source:
        msg = f"{ops / 'drift.py'} does not import operators.drift_stats as expected"
        raise SystemExit(msg)
    base_drift = _module("base_drift", rewired, ops / "drift.py")
    assert base_drift.drifted_check is base_stats.drifted_check
    base_score = _module("base_score", (ops / "score.py").read_text(), ops / "score.py")
    base_decode = _module("base_decode", (ops / "decode.py").read_text(), ops / "decode.py")
    base_tenancy = _module("base_tenancy", (ops / "tenancy.py").read_text(), ops / "tenancy.py")
    return base_drift, base_score, base_decode, base_tenancy


def raw_workload(n: int, step_ms: float, *, fetched: bool = False) -> list[RawRecord]:
    """The workload's records; ``fetched``: as the source reads them (4 partitions, Kafka
    timestamps), else all of partition 0 without timestamps (drift's and score's input since
    session 17)."""
    contract = signal_contracts()[0]
    spec = WorkloadSpec(
        tenants=10,
        count=n // 10,
        duplicates=0.0,
        invalid=0.0,
        start=datetime(2026, 12, 1, tzinfo=UTC),
        step=timedelta(milliseconds=step_ms),
    )
    return [
        RawRecord(
            "bench",
            offset % 4 if fetched else 0,
            offset,
            m.key,
            m.value,
            1_796_000_000_000 + offset if fetched else None,
        )
        for offset, m in enumerate(generate(spec, 1, contract.parsed))
    ]


def _decoder(module: ModuleType) -> Any:
    contract = signal_contracts()[0]
    return module.SignalDecoder(lambda _id: contract.text, signal_contracts()[-1].parsed)


def workload(settings: Settings, n: int, step_ms: float) -> list[Decoded]:
    raws = raw_workload(n, step_ms)
    decoded = _decoder(sys.modules["operators.decode"]).decode_many(raws)
    return [d for d in decoded if isinstance(d, Decoded)]


def run_decode(module: ModuleType, settings: Settings, batches: list[list[Any]]) -> list[Any]:
    decoder = _decoder(module)  # (its first record fetches the writer and compiles its reader)
    return [d for items in batches for d in decoder.decode_many(items)]


def run_tag(module: ModuleType, settings: Settings, batches: list[list[Any]]) -> list[Any]:
    return [t for items in batches for t in module.tag_run(items, _POLICY[0])]


#: The tenancy policy run_tag tags with (loaded once, by main).
_POLICY: list[TenancyPolicy] = []


def run_drift(module: ModuleType, settings: Settings, batches: list[list[Any]]) -> list[Any]:
    states: dict[str, Any] = {}
    out: list[Any] = []
    for items in batches:
        t = items[0].signal.tenant_id
        state = states.get(t)
        if state is None:
            key = settings.quarantine.release_key
            state = states[t] = module.TenantDrift(t, settings.drift, None, key)
        out.extend(state.push_batch(items))
    for state in states.values():
        out.extend(state.flush())
    return out


def run_score(module: ModuleType, settings: Settings, batches: list[list[Any]]) -> list[Any]:
    states: dict[str, Any] = {}
    out: list[Any] = []
    for items in batches:
        t = items[0].signal.tenant_id
        state = states.get(t)
        if state is None:
            state = states[t] = module.TickScore(settings.score)
        out.extend(state.add(items))
    for state in states.values():
        out.extend(state.flush())
    return out


def compare(
    label: str,
    run: Callable[[ModuleType, Settings, list[list[Any]]], list[Any]],
    sides: tuple[ModuleType, ModuleType],
    settings: Settings,
    batches: list[list[Any]],
    rounds: int,
) -> None:
    count = sum(map(len, batches))
    times: list[list[float]] = [[], []]
    outputs: list[list[str]] = [[], []]
    for _ in range(rounds):
        for side, module in enumerate(sides):
            drift_stats._CUTS.clear()  # (each run starts with its caches empty)
            drift_stats._ARRAYS.clear()
            gc.collect()
            start = time.process_time()
            out = run(module, settings, batches)
            times[side].append((time.process_time() - start) / count * 1e6)
            outputs[side] = [repr(x) for x in out]
    if outputs[0] != outputs[1]:
        msg = f"{label}: the base and this checkout gave different outputs"
        raise AssertionError(msg)
    base, this = (statistics.median(t) for t in times)
    print(
        f"{label:<28} {count:>8,} {base:>7.2f} {this:>7.2f} {this / base:>6.2f}x"
        f"   base {' '.join(f'{t:.2f}' for t in times[0])};"
        f" this {' '.join(f'{t:.2f}' for t in times[1])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="a base checkout's root")
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--step-ms", type=float, nargs="+", default=[1000.0, 20.0, 2.0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    settings = Settings.load()
    policy = TenancyPolicy.load(settings.policies_dir)
    _POLICY.append(policy)
    base_drift, base_score, base_decode, base_tenancy = load_base(args.against)
    print(
        f"µs per record (CPU, medians of {args.rounds}), base {args.against} against this"
        f" checkout, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'step':<28} {'records':>8} {'base':>7} {'this':>7} {'ratio':>7}")
    gc.disable()
    try:
        for k, step_ms in enumerate(args.step_ms):
            decoded = workload(settings, args.signals, step_ms)
            batches = _per_tenant(decoded, args.batch)
            if k == 0:
                raws = raw_workload(args.signals, step_ms, fetched=True)
                fetches = [raws[i : i + 1000] for i in range(0, len(raws), 1000)]
                compare("decode", run_decode, (base_decode, decode), settings, fetches, args.rounds)
            compare(
                f"drift, {step_ms:g} ms/tenant",
                run_drift,
                (base_drift, drift),
                settings,
                batches,
                args.rounds,
            )
            passed = [d for d in run_drift(drift, settings, batches) if type(d) is Decoded]
            if k == 0:
                runs = _per_tenant(passed, args.batch)  # type: ignore[arg-type]
                compare("tenant-tag", run_tag, (base_tenancy, tenancy), settings, runs, args.rounds)
            tagged = _per_tenant([tag(d, policy) for d in passed], args.batch)  # type: ignore[arg-type]
            compare(
                f"score, {step_ms:g} ms/tenant",
                run_score,
                (base_score, score),
                settings,
                tagged,
                args.rounds,
            )
    finally:
        gc.enable()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
