"""MLflow as the model registry: versions and aliases, lineage, the catalog and reports."""
