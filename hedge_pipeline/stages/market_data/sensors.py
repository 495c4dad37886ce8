"""``new_weekly_codes_sensor``: turn new or changed data in the source into runs.

The cursor maps each weekly code to the fingerprint the source gave it (a content hash for
file drops). A code that is not yet a partition is added and ingested; a known code whose
fingerprint changed is ingested again; an unchanged code is left alone, so a second tick
with nothing new requests nothing. Codes that are already partitions when the sensor first
sees them (materialized by ``hedge run``, say) are recorded without a run.

A new code only gets market data (``market_data_job``) while no model is trained yet; codes
that are adjacent partitions share a run, in ranges of ``CODES_PER_RUN`` as a backfill of the
market data cuts them (a history's thousand codes, found on the first tick, are twenty runs).
Changed codes are grouped the same way. Once
``cnn_lstm_model`` has a materialization, the lineage is trained and a new code joins it in
one ``new_code_job`` run (market data, ``portfolio_selection`` again, its specialist), after
which ``portfolio_retrain_sensor`` retrains the portfolio stages. Without that, nothing would
ever select the new code's book or train its specialist, and the portfolio sensor would wait
for it forever. The other codes' partitions are not rerun.

Runs go to active codes only (``orchestration.partitions.active_weekly_codes``): every
partition, unless the latest ``portfolio_selection`` was made with an ``as_of``. Then every new
code is still added as a partition (so its data can be ingested: ``hedge run --select
market_data --partition CODE``), but only a code among that selection's active codes gets a
run, and a ``new_code_job`` passes the selection's ``as_of`` and template to
``portfolio_selection``, so that the selection it makes again holds the same codes. An inactive
code's new fingerprint is not recorded in the cursor, so its change is ingested on the first
tick after it is active again.
"""

import hashlib
import json

import dagster as dg

from hedge_pipeline.orchestration.partitions import (
    active_set,
    code_ranges,
    partition_tags,
    weekly_code_partitions,
)
from hedge_pipeline.orchestration.resources import ChainSourceResource
from hedge_pipeline.stages.market_data.assets import CODES_PER_RUN
from hedge_pipeline.stages.market_data.jobs import market_data_job, new_code_job

CNN_LSTM = dg.AssetKey("cnn_lstm_model")


def _new_code_job(instance: dg.DagsterInstance) -> str:
    """The job a new code gets: the whole per-code lineage once the models are trained."""
    trained = instance.fetch_materializations(CNN_LSTM, limit=1).records
    return new_code_job.name if trained else market_data_job.name


def _run_key(codes: list[str], listing: dict[str, str]) -> str:
    """A run's key: its codes and their fingerprints, so that the same content is never
    requested twice and a changed one always is.

    >>> _run_key(["A"], {"A": "0123456789abcdef0123"})
    'A@0123456789abcdef'
    >>> _run_key(["A", "B"], {"A": "0" * 20, "B": "1" * 20})
    'A..B@8c4d9b16337ae610'
    """
    if len(codes) == 1:
        return f"{codes[0]}@{listing[codes[0]][:16]}"
    content = "\n".join(f"{code}={listing[code]}" for code in codes)
    return f"{codes[0]}..{codes[-1]}@{hashlib.sha256(content.encode()).hexdigest()[:16]}"


@dg.sensor(
    jobs=[market_data_job, new_code_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Adds weekly codes found in the source and ingests the new or changed ones that are "
        "active (every code, unless portfolio_selection was made with an as_of)."
    ),
)
def new_weekly_codes_sensor(
    context: dg.SensorEvaluationContext, source: ChainSourceResource
) -> dg.SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    listing = source.build().list_codes()
    known = weekly_code_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    partitions = set(known)
    added = sorted(code for code in listing if code not in partitions)  # in this order
    new = list(added)
    changed = sorted(
        code
        for code, fingerprint in listing.items()
        if code in partitions and code in seen and seen[code] != fingerprint
    )
    active = active_set(context.instance, partitions | set(new))
    alive = set(active.codes)
    idle = [code for code in new + changed if code not in alive]
    new, changed = [c for c in new if c in alive], [c for c in changed if c in alive]
    new_job = _new_code_job(context.instance) if new else market_data_job.name
    # A new code joining a trained portfolio makes the selection again: with the as_of and
    # template of the one that defines the active codes, else it would select every code.
    join_config = active.selection_run_config() if new_job == new_code_job.name else {}
    joining = new if new_job == new_code_job.name else []
    runs = [
        dg.RunRequest(
            job_name=new_code_job.name,
            partition_key=code,
            run_key=_run_key([code], listing),
            tags={"hedge/trigger": "new"},
            run_config=join_config,
        )
        for code in joining
    ]
    # Market data alone goes in ranges of adjacent codes, as a backfill of it does: a history
    # of a thousand codes found at once is twenty runs, not a thousand.
    order = [*known, *added]
    for trigger, codes in (("new", [] if joining else new), ("changed", changed)):
        runs += [
            dg.RunRequest(
                job_name=market_data_job.name,
                run_key=_run_key(group, listing),
                # One code: its partition key, as before; a range: its first and last.
                partition_key=group[0] if len(group) == 1 else None,
                tags={"hedge/trigger": trigger, **(partition_tags(group) if group[1:] else {})},
            )
            for group in code_ranges(codes, order, CODES_PER_RUN)
        ]
    if new:
        context.log.info(f"new weekly codes: {', '.join(new)} ({new_job})")
    if changed:
        context.log.info(f"changed weekly codes: {', '.join(changed)}")
    if idle:
        context.log.info(
            f"{len(idle)} new or changed weekly codes are not active (active: {active.describe()})"
            ", so no run: " + ", ".join(idle[:10]) + (" …" if len(idle) > 10 else "")
        )
    # Every new code becomes a partition, active or not. An inactive code's change is not
    # recorded, so the tick after it becomes active ingests it.
    pending = {code: seen[code] for code in idle if code in partitions}
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=(
            [weekly_code_partitions.build_add_request(added)] if added else []
        ),
        cursor=json.dumps({**seen, **listing, **pending}, sort_keys=True),
    )
