"""Deployment bundles: ``bundle`` writes and loads them (ONNX with QDQ integer layers, safetensors,
arch.json, manifest.json); ``checks`` exports one point of a front and checks the bundle in
onnxruntime against what the search measured."""
