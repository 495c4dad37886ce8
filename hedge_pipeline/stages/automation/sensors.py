"""``portfolio_retrain_sensor``: retrain the portfolio stages once a specialist generation is in.

The portfolio-level stages (meta-controller → joint model → ensemble) are built on every
specialist at once, so they should retrain when *every* active weekly code has a specialist
newer than the current ensemble: not after the first code's nightly run, and not while a code
is still missing. ``AutomationCondition.eager()`` never fires while any partition is missing
(shared notes), hence a sensor.

"Newer" compares event-log storage ids, which only grow, rather than wall-clock timestamps.
A *generation* is the set of the latest specialist materialization per code; its hash is the
run key, so the request for one generation launches one run however many ticks see it
(Dagster drops a repeated run key), and the cursor remembers it so that later ticks say why
they skip. When the ensemble run fails, the generation is not retried: the next generation of
specialists, or a launch from the UI, starts it again.

A code that *joined* since the last ensemble (its first specialist materialization is newer
than the ensemble: ``new_weekly_codes_sensor``'s ``new_code_job``) also makes a generation due,
once every active code has a specialist: the ensemble does not cover that code, and waiting
for every other code to be retrained would leave it out until someone retrains them all.

Active codes (``orchestration.partitions.active_weekly_codes``): every partition, unless the
latest ``portfolio_selection`` was made with an ``as_of``; then only the codes alive then, and
an expired code's missing or old specialist holds nothing back. The portfolio stages read the
``portfolio_selection`` table, which that selection wrote from exactly these codes, so the run
needs no config of its own (``portfolio_training_job`` has no ``portfolio_selection`` step to
configure); it is tagged ``hedge/as_of``.

A tick costs a fixed number of event-log queries however many codes there are: the latest
specialist of every partition comes in one, the partitions materialized before the ensemble in
another (with 1,000 codes, two queries per code made a tick take about 10 s; now ~30 ms).
"""

from __future__ import annotations

import hashlib

import dagster as dg

from hedge_pipeline.orchestration.partitions import ActiveSet, active_set

SPECIALIST = dg.AssetKey("specialist_agents")
ENSEMBLE = dg.AssetKey("hedge_ensemble")
PORTFOLIO_JOB = "portfolio_training_job"


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int | None:
    """The storage id of the latest materialization of ``key``, if any."""
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].storage_id if records else None


def specialist_generation(
    instance: dg.DagsterInstance, active: ActiveSet | None = None
) -> tuple[str | None, str]:
    """``(run_key, reason)``: the run key of a generation that is due, else None and why not."""
    active = active or active_set(instance)
    codes = active.codes
    if not codes:
        if active.as_of is None:
            return None, "no weekly codes yet"
        return None, f"no active weekly codes: none of {active.describe()} is a partition"
    ensemble = _latest_storage_id(instance, ENSEMBLE)
    by_code = instance.get_latest_storage_id_by_partition(
        SPECIALIST, dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    latest = {code: by_code.get(code) for code in codes}
    stale = [
        c for c, sid in latest.items() if sid is None or (ensemble is not None and sid <= ensemble)
    ]
    joined = []
    if ensemble is not None and None not in latest.values():
        # A code joined when even its first specialist came after the ensemble: it has no
        # specialist at or before the ensemble.
        newer = [c for c in codes if c not in stale]
        before = (
            instance.get_materialized_partitions(SPECIALIST, before_cursor=ensemble + 1)
            if newer
            else set()
        )
        joined = [c for c in newer if c not in before]
    which = "codes" if active.as_of is None else f"codes active at as_of {active.as_of}"
    if stale and not joined:
        since = "since the last hedge_ensemble" if ensemble is not None else "yet"
        return None, f"{len(stale)}/{len(codes)} {which} have no new specialist {since}: " + (
            ", ".join(stale[:10]) + (" …" if len(stale) > 10 else "")
        )
    digest = hashlib.sha256(
        ";".join(f"{code}:{sid}" for code, sid in latest.items()).encode()
    ).hexdigest()
    if stale:
        return f"specialists@{digest[:16]}", f"{', '.join(joined)} joined the portfolio"
    return f"specialists@{digest[:16]}", f"every one of {len(codes)} {which} has a new specialist"


@dg.sensor(
    job_name=PORTFOLIO_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Launches portfolio_training_job once every active weekly code has a specialist "
        "newer than the last hedge_ensemble, or a new code's first specialist is in (once per "
        "specialist generation)."
    ),
)
def portfolio_retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    active = active_set(context.instance)
    run_key, reason = specialist_generation(context.instance, active)
    if run_key is None:
        return dg.SensorResult(skip_reason=reason, cursor=context.cursor)
    if run_key == context.cursor:
        return dg.SensorResult(
            skip_reason=f"generation {run_key} already requested", cursor=context.cursor
        )
    context.log.info(f"{reason}: requesting {PORTFOLIO_JOB} ({run_key})")
    tags = {"hedge/trigger": "specialists_updated"}
    if active.as_of is not None:
        tags["hedge/as_of"] = active.as_of
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags=tags)],
        cursor=run_key,
    )
