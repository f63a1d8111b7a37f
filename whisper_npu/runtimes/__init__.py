"""Runtimes: what runs a compiled model (registry.py, by the backend that compiled it) and the fp32 reference
(torch_ref.py), all behind the decode protocol (whisper_npu/decoding/protocol.py)."""
