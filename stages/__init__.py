"""DVC stages: one module per stage, run as ``python -m stages.<name>`` from dvc.yaml."""
