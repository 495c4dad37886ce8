"""Training stages run as child processes: ``python -m hedge_pipeline.training <stage>``.

Launched by Dagster Pipes (a subprocess here, ``torchrun`` for several devices, a pod or a Ray
job elsewhere), or by hand with ``--extras FILE``. This package imports only dagster_pipes,
torch, mlflow and the project's pure modules: never dagster, never the DuckDB file.
"""
