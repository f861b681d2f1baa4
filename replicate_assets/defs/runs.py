"""Runs and the `replicate_api` pool: a run that died (kill -9, a lost machine) must never block the next one.

Dagster frees a dead run's pool slot only when its run monitoring notices (a daemon, after a delay); a run
started from the CLI beside it would wait forever. So each run records its process in a tag, and a starting run
frees the slots of runs that have ended or whose process is gone (on this host), with a log line saying so.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from replicate_assets.pipeline.processes import process_alive, process_identity

POOL = "replicate_api"
PROCESS_TAG = "replicate_assets/process"


def guard_run(instance: dg.DagsterInstance, run_id: str, log: Any) -> list[str]:
    """Tag `run_id` with this process, then free the pool slots of dead runs; returns what was freed."""
    instance.add_run_tags(run_id, {PROCESS_TAG: process_identity()})
    return free_stale_slots(instance, log, keep=run_id)


def stale_reason(run: dg.DagsterRun | None) -> str | None:
    """Why a run holding a slot can no longer use it, or None while it may."""
    if run is None:
        return "the run no longer exists"
    if run.is_finished:
        return f"the run ended ({run.status.value})"
    identity = run.tags.get(PROCESS_TAG)
    if process_alive(identity) is False:
        host, pid, _ = identity.rsplit(":", 2)
        return f"its process {pid} on {host} is gone"
    return None


def free_stale_slots(instance: dg.DagsterInstance, log: Any, keep: str | None = None, pool: str = POOL) -> list[str]:
    """Free the `pool` slots (and queued claims) of runs that ended or whose process is gone; a run still
    marked as running is marked failed. Returns one line per run freed."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    info = storage.get_concurrency_info(pool)
    holders = {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    freed = []
    for run_id in sorted(holders - {keep}):
        run = instance.get_run_by_id(run_id)
        why = stale_reason(run)
        if why is None:
            continue
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, f"replicate_assets: {why}; its {pool} pool slot was freed")
        storage.free_concurrency_slots_for_run(run_id)
        line = f"freed the {pool} pool slot of run {run_id}: {why}"
        log.warning(line)
        freed.append(line)
    return freed
