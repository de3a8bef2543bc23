"""The processes the integration tests' ``igflow()`` started and the running test has not ended.

One list in a module of its own: pytest imports ``tests/integration/conftest.py`` as the module
``conftest`` (``tests/integration`` is no package), while the tests import it as
``tests.integration.conftest``: two module objects. With the list in the conftest itself, the
tests filled one copy and the reaping fixture emptied the other, so a flow a test left running
(``igflow run --tail``) ran on through the rest of the suite (seen in CI: one started by
``test_switches`` was still consuming during the unit tests).
"""

from __future__ import annotations

import subprocess

__all__ = ["STARTED"]

STARTED: list[subprocess.Popen[bytes]] = []
