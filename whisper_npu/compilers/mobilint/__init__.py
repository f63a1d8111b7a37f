"""The ``qbcompiler`` compiler, Mobilint's: the calls as data per call style (plan.py), making them (build.py)."""
