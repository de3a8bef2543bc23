"""When an idle source partition polls again: on a wall-clock grid, so that every worker of a
cluster ends its epochs at the same instants.

Bytewax 0.21 ends a source partition's epoch at the first activation at least an epoch
interval after the last end, and only while everything downstream has finished the previous
epoch. While downstream lags, its input operator re-activates itself at once, without calling
the partition (``src/inputs.rs``: the partition's last ``next_awake`` is in the past), and so
spins until the lagging epoch completes (bytewax issue #161). In a cluster the previous epoch
completes only when every worker has ended it; a worker whose epochs end ``d`` later than
another's makes that one spin ``d`` of every interval. An idle partition polling every 50 ms
ends its epochs up to 50 ms late, each worker by its own lateness, so ``d`` drifted by ~25 ms
an epoch: one process of an idle two-process cluster spun at 45-69% of a core within minutes
(session 16, ``benchmarks/idle.py``).

:class:`EpochPhase` gives an idle partition its next poll instead:

- polls fall on a grid of ``step`` (the epoch interval cut into equal steps of at most 50 ms)
  plus a small margin, the same grid in every process (wall clock);
- Bytewax is given an epoch interval :attr:`EpochPhase.engine_interval` half a step shorter
  than the grid's, so the poll that ends an epoch is the first grid poll past the interval, not one
  step later by a coin flip of the two activations' lateness;
- while the polls that end epochs are off the epoch grid (every ``interval`` of wall-clock
  time), the poll that would end the next epoch is put off by one step: each epoch ends one
  step later until they end on the grid, and from then on they stay there.

A busy partition is not paced (it returns no ``next_awake``); when it goes idle its epochs
come back to the grid within about ``interval / step`` epochs (20 at the defaults), each with
one poll put off by ``step`` (a few epochs more when a late activation ends one without it:
``tests/unit/test_epoch_phase.py``).
"""

from __future__ import annotations

import math
from datetime import timedelta

__all__ = ["EpochPhase"]

#: The longest wait between two polls of an idle partition.
MAX_STEP_S = 0.05
#: How far past a grid point a poll is asked for: the activation comes a little after.
MARGIN_S = 0.002
#: How much later than the epoch's end Bytewax may call ``snapshot``: the same activation calls
#: ``next_batch`` first, whose fetch waits up to 10 ms on an idle partition.
SNAPSHOT_LAG_S = 0.02


class EpochPhase:
    """The poll grid of one epoch interval (see the module docstring). Pure arithmetic on
    wall-clock seconds: the caller reads the clock."""

    __slots__ = ("_ended", "engine_interval", "interval", "step")

    def __init__(self, interval: timedelta) -> None:
        seconds = interval.total_seconds()
        if seconds <= 0:
            msg = f"the epoch interval must be positive, got {interval}"
            raise ValueError(msg)
        #: The epoch interval the grid repeats at.
        self.interval = seconds
        #: The poll grid's step: the interval cut into equal steps of at most 50 ms.
        self.step = seconds / math.ceil(seconds / MAX_STEP_S - 1e-9)
        #: What Bytewax is given as its epoch interval: half a step shorter, so that a poll
        #: ends the epoch whether it comes up to half a step earlier or later than the last end
        #: did (the two activations' lateness).
        self.engine_interval = timedelta(seconds=seconds - self.step / 2)
        #: When the partition's last epoch ended, as seen at its ``snapshot`` (``None``: not yet).
        self._ended: float | None = None

    def ended(self, now: float) -> None:
        """The engine ended the partition's epoch (it called ``snapshot``) at about ``now``."""
        self._ended = now

    def next_poll(self, now: float) -> float:
        """When an idle partition polls next: the next grid point after ``now`` (plus a margin),
        or one step later when that poll would end an epoch off the epoch grid."""
        step = self.step
        index = math.floor((now - MARGIN_S) / step) + 1
        poll = index * step + MARGIN_S
        ended = self._ended
        if ended is None:
            return poll
        # Bytewax ends the epoch at the first activation at least engine_interval after the
        # last end, which came at most SNAPSHOT_LAG_S before `ended`; it asks for the next
        # poll before it ends the epoch (and calls snapshot) in the same activation.
        interval = self.engine_interval.total_seconds()
        if now >= ended - SNAPSHOT_LAG_S + interval:
            ended = now  # this activation ends the epoch
        due = ended - SNAPSHOT_LAG_S + interval
        if poll < due:
            return poll
        per_epoch = round(self.interval / step)
        if index % per_epoch == 0:
            return poll  # this poll ends the epoch on the grid
        return poll + step
