"""Evaluation: scoring functions (metrics.py), the per-language record (score.py), the results table (report.py)."""
