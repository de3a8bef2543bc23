"""``igflow run``: the coherence flow under Bytewax, with recovery and metrics.

Recovery: the Bytewax recovery store (``--recovery-dir``) holds the Kafka offsets and the
batches not yet committed; it is created on first use. Several processes of one cluster may
start at once, so creation happens under a file lock.

Start-up: :func:`run` imports the flow's module after :func:`~core.lazy_pandas.defer_pandas`,
so that pyarrow does not import pandas for the flow (:func:`import_flow`; ``--processes`` calls
it before it forks: :mod:`igflow.local_cluster`).
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import signal
import time
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from core import metric_labels, metrics
from core.catalog import preload
from core.cluster import Cluster
from core.collector import tune_for_flow
from core.lazy_pandas import defer_pandas
from core.settings import Settings
from core.shutdown import StopGuard

__all__ = ["FIRST_USE", "Cluster", "ensure_recovery_dir", "import_flow", "run"]

log = logging.getLogger(__name__)


def ensure_recovery_dir(directory: Path, partitions: int) -> None:
    """Create the recovery partitions once; a no-op when they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".init.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(directory.glob("part-*.sqlite3")):
            init_db_dir(directory, partitions)
            log.info("created %d recovery partitions in %s", partitions, directory)


#: What a run's libraries import at the first use of something, after the flow's modules: its
#: first lake append (pyiceberg's schema check builds a report table with rich; pyarrow's
#: compute asks numpy for ``numpy.ma``; the lake's batches group with pyarrow's Acero;
#: pyiceberg's partition transforms are pyiceberg-core's), its first manifest read (pyiceberg's
#: Cython Avro decoder) and the first host name resolved (the IDNA codec). :func:`import_flow`
#: imports them with the flow's modules, so that ``--processes`` children, forked after it, do
#: not each import them again (~27 ms of CPU a child). A module that is not installed is left
#: for its first use to report.
FIRST_USE = (
    "rich.console",
    "rich.table",
    "numpy.ma",
    "pyarrow.acero",
    "pyiceberg_core.transform",
    "pyiceberg.avro.decoder_fast",
    "encodings.idna",
)


def import_flow(settings: Settings) -> None:
    """Import the flow's modules (most of a run's start-up CPU), pandas deferred: pyarrow would
    import it (0.35-0.9 s) for the digest's pyarrow scalar, and a lake-only run never needs it;
    what opening ``settings``' catalog imports (:func:`core.catalog.preload`); and what the
    run's libraries would import at their first use (:data:`FIRST_USE`)."""
    defer_pandas()
    import flows.coherence  # noqa: F401

    preload(settings)
    for name in FIRST_USE:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def run(settings: Settings, cluster: Cluster | None = None) -> int:
    """Run the flow until its input ends (bounded) or forever (tail); alone by default.

    Returns the exit status: 0, or 128 + the signal's number after SIGINT/SIGTERM stopped it
    (130, 143). A process that cannot stop within ``run.stop_seconds`` after a signal, or whose
    peer process left the cluster, exits with status 3 from :class:`~core.shutdown.StopGuard`.
    """
    cluster = cluster or Cluster()
    guard = StopGuard(settings.run.stop_seconds, cluster.process_id, cluster.addresses)
    try:
        with guard:
            _run(settings, cluster)
    except KeyboardInterrupt:
        if guard.signum is None:
            raise
        log.warning(
            "stopped on %s in %.1f s",
            signal.Signals(guard.signum).name,
            time.monotonic() - guard.started,
            extra={"op": "run.stop"},
        )
        return 128 + guard.signum
    return 0


def _run(settings: Settings, cluster: Cluster) -> None:
    port = settings.run.metrics_port
    metric_labels.configure(settings)
    metrics.serve(
        port + (cluster.process_id or 0) if port else 0,
        settings.server_tls(),
        host=settings.run.metrics_host,
    )
    import_flow(settings)
    from flows.coherence import build, engine_epoch
    from flows.execute import execute

    flow = build(settings, cluster=cluster, open_early=True)
    epoch = engine_epoch(settings)
    recovery = None
    if settings.run.recovery_dir:
        directory = Path(settings.run.recovery_dir)
        ensure_recovery_dir(directory, settings.run.workers * cluster.processes)
        recovery = RecoveryConfig(directory, timedelta(0))
    thresholds = tune_for_flow(settings.run.gc_oldest_threshold)
    log.info(
        "running flow %s (%s), gc thresholds %s",
        flow.flow_id,
        "bounded" if settings.run.bounded else "tail",
        thresholds,
        extra={"op": "run"},
    )
    waited = cluster.await_listeners()
    if waited > 0.05:
        log.info("waited %.2f s for the cluster's earlier processes to listen", waited)
    execute(
        flow,
        workers_per_process=settings.run.workers,
        process_id=cluster.process_id,
        addresses=list(cluster.addresses) or None,
        epoch_interval=epoch,
        recovery_config=recovery,
    )
