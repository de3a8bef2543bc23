"""``core.arrow_pool``: a flow's process allocates Arrow's buffers from the pool its settings
name (``run.arrow_memory_pool``), unless Arrow's own variable named one. Each case runs in a
fresh interpreter: Arrow chooses its pool once per process, when pyarrow is imported."""

from __future__ import annotations

import pytest

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


#: Each command's arguments, and its work past the pool's choice replaced by ``noted``.
_COMMANDS = {
    "run": """
        fake = types.ModuleType("igflow.runner")
        fake.Cluster, fake.import_flow, fake.run = (lambda *a: None), (lambda s: None), noted
        sys.modules["igflow.runner"] = fake
        argv = ["run"]
    """,
    "replay": """
        from igflow import replay_commands
        replay_commands._start_replay = noted
        argv = ["replay", "--into", "scratch"]
    """,
    "verify": """
        fake = types.ModuleType("replay.verify")
        fake.verify = lambda *a, **k: noted(types.SimpleNamespace(
            groups=[], differences={}, files={}, retention_removed={}, identical=True))
        sys.modules["replay.verify"] = fake
        argv = ["verify"]
    """,
}


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_each_command_chooses_before_anything_imports_pyarrow(name: str) -> None:
    """``igflow run``, ``replay`` and ``verify`` through ``igflow.cli.main``, each in a fresh
    interpreter: Arrow's pool is the setting's, and nothing said that it came too late
    (``verify`` imported pyarrow, through ``core.lazy_pandas``, before its choice until
    session 28)."""
    out = run_python(
        """
        import json, logging, sys, textwrap, types
        seen, warned = [], []
        def noted(*args, **kwargs):
            import pyarrow as pa
            seen.append(pa.default_memory_pool().backend_name)
            return args[0] if args and isinstance(args[0], types.SimpleNamespace) else 0
        class Warned(logging.Handler):
            def emit(self, record):
                warned.append(record.getMessage())
        logging.getLogger("core.arrow_pool").addHandler(Warned())
        logging.getLogger("core.arrow_pool").setLevel(logging.DEBUG)  # "too late" is debug
        exec(textwrap.dedent(sys.argv[1]))
        from igflow import cli
        assert cli.main(argv) == 0
        print(json.dumps({"pools": seen, "warned": warned}))
        """,
        _COMMANDS[name],
        env={"ARROW_DEFAULT_MEMORY_POOL": None, "IGFLOW_RUN_ARROW_MEMORY_POOL": None},
    )
    assert out == {"pools": ["jemalloc"], "warned": []}
