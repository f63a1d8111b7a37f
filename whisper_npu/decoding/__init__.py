"""Decoding: the backend protocol (protocol.py), one greedy loop for every backend (greedy.py), clips through a
backend (run.py)."""
