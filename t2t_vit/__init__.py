"""T2T-ViT offline inference toolkit: the stages from a published checkpoint to accuracy and images/s.

The top-level ``T2T_ViT_*.py`` scripts are thin command lines over this package; the logic lives here
so that it can be imported and tested. The package is layered (docs/architecture.md): the modules here are
the ground floor, under ``data/``, ``model/``, ``ascend/``, ``runtime/`` and ``job/``, each importing only
the layers below it.
"""

__version__ = "0.1.0"


class ToolkitError(Exception):
    """An error caused by the user's input or environment.

    Scripts print its message on one line and exit non-zero, without a traceback.
    """
