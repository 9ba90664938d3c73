"""certify: prove or refute properties of neural networks.

The public entry points are :func:`certify.api.check` (one model, one spec) and the
``certify`` command line.  Heavy dependencies (onnxruntime, cvxpy, pysmt) are imported
lazily inside the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
