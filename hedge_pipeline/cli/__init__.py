"""The ``hedge`` command: run the lineage, browse templates and models, evaluate, benchmark."""
