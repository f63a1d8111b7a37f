"""``python -m whisper_npu transcribe ...``: the command line (whisper_npu/cli.py)."""
from whisper_npu.cli import main

main()
