"""The one partitioning of the project: a dynamic partition per weekly option code."""

import dagster as dg

weekly_code_partitions = dg.DynamicPartitionsDefinition(name="weekly_code")
