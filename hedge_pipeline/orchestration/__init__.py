"""What several stages share in Dagster: the weekly-code partitions, the resources (source,
warehouse, launcher), metadata helpers and the identity that models are tagged with.
"""
