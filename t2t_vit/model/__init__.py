"""The model: every published variant as data, the network with upstream's keys, checkpoints, the ONNX export.

Imports ``data/`` (the bin layouts an export takes) and the ground floor (docs/architecture.md).
"""
