"""``core.arrow_pool``: a flow's process allocates Arrow's buffers from the pool its settings
name (``run.arrow_memory_pool``), unless Arrow's own variable named one. Each case runs in a
fresh interpreter: Arrow chooses its pool once per process, when pyarrow is imported."""

from __future__ import annotations

from tests.fresh_python import run_python

_CHOOSE = """
    import json, sys
    from core.arrow_pool import choose_pool
    chosen = choose_pool(sys.argv[1])
    import pyarrow as pa
    print(json.dumps({"chosen": chosen, "arrow": pa.default_memory_pool().backend_name}))
"""


def test_the_pool_named_is_arrows() -> None:
    for name in ("jemalloc", "system", "mimalloc"):
        out = run_python(_CHOOSE, name, env={"ARROW_DEFAULT_MEMORY_POOL": None})
        assert out == {"chosen": name, "arrow": name}


def test_arrows_own_variable_wins() -> None:
    out = run_python(_CHOOSE, "jemalloc", env={"ARROW_DEFAULT_MEMORY_POOL": "system"})
    assert out == {"chosen": "system", "arrow": "system"}


def test_too_late_once_pyarrow_is_imported() -> None:
    out = run_python(
        """
        import json
        import pyarrow as pa
        from core.arrow_pool import choose_pool
        print(json.dumps([choose_pool("system"), pa.default_memory_pool().backend_name]))
        """,
        env={"ARROW_DEFAULT_MEMORY_POOL": None},
    )
    assert out == [None, "mimalloc"]  # pyarrow's own default, chosen at its import


def test_igflow_run_chooses_before_the_flow_imports_pyarrow() -> None:
    """``igflow run``'s command, its runner replaced by one that reports Arrow's pool."""
    out = run_python(
        """
        import argparse, json, sys, types
        fake = types.ModuleType("igflow.runner")
        seen = []
        def run(settings, cluster):
            import pyarrow as pa
            seen.append(pa.default_memory_pool().backend_name)
            return 0
        fake.Cluster, fake.import_flow, fake.run = (lambda *a: None), (lambda s: None), run
        sys.modules["igflow.runner"] = fake
        from core.settings import Settings
        from igflow import cli
        args = argparse.Namespace(tail=False, workers=None, recovery_dir=None,
                                  metrics_port=None, addresses=None, process_id=None,
                                  processes=None)
        assert cli._cmd_run(args, Settings.load()) == 0
        print(json.dumps(seen))
        """,
        env={"ARROW_DEFAULT_MEMORY_POOL": None, "IGFLOW_RUN_ARROW_MEMORY_POOL": None},
    )
    assert out == ["jemalloc"]
