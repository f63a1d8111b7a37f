"""The ``qbcompiler`` artifacts at run time: the ``.mxq`` files on a Mobilint NPU through Mobilint's runtime
(runtime.py) and Mobilint's model folder for its loader, transformers-mblt (folder.py). Placement is
whisper_npu/npu.py."""
