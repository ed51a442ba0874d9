"""The Ascend side: the keep set ATC needs, the NPU's fp16 emulated and explained, AIPP, the .om build record, the
host's checks. Never imports ``runtime/`` or ``job/`` (docs/architecture.md).
"""
