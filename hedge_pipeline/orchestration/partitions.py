"""The one partitioning of the project: a dynamic partition per weekly option code."""

import dagster as dg

weekly_code_partitions = dg.DynamicPartitionsDefinition(name="weekly_code")


def active_weekly_codes(instance: dg.DagsterInstance) -> list[str]:
    """The weekly codes the automation works on: every partition of ``weekly_code``, sorted.

    A code is active from the moment it becomes a partition (``new_weekly_codes_sensor``,
    ``hedge run``) until someone deletes the partition; expiry does not end it, because an
    expired code's quotes are still training data.
    """
    return sorted(weekly_code_partitions.get_partition_keys(dynamic_partitions_store=instance))
