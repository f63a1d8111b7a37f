"""Compilers: each builds one component's artifacts (registry.py names them); whisper_npu/runtimes/ runs them."""
