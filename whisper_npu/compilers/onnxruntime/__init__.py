"""The ``onnxruntime`` compiler: ONNX export in the NPU layout (export.py), smoothing (smoothing.py), INT8 with ONNX
Runtime (quantize.py); build.py ties them together."""
