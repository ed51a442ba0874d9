"""T2T-ViT-14 offline inference toolkit: model, checkpoint loading, ONNX export and the stages around them.

The top-level ``T2T_ViT_*.py`` scripts are thin command lines over this package; the logic lives here
so that it can be imported and tested.
"""

__version__ = "0.1.0"


class ToolkitError(Exception):
    """An error caused by the user's input or environment.

    Scripts print its message on one line and exit non-zero, without a traceback.
    """
