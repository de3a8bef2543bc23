"""Developer tooling: the local service stack (``python -m dev start|stop|status``).

See :mod:`dev.stack` for the contracts and DEVELOPERS.md for how each service is run.
"""

from dev.config import StackConfig
from dev.errors import StackError

__all__ = ["StackConfig", "StackError"]
