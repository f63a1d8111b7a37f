"""STAND-IN package path of qbcompiler (see qbcompiler/__init__.py)."""
