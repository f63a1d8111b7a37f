"""params.yaml: reading it and checking one section (base.py), one module per section, the whole file (full.py)."""
