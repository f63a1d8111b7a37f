"""Audio: decoding and validation (prepare.py), log-mel features (features.py), the audio stage's clips (clips.py)."""
