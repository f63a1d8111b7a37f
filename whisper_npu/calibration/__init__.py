"""Calibration sets: task mix and decoder token sequences (sequences.py), the tutorial's list files (lists.py), and
a set as the compile stage reads it (sets.py)."""
