"""Training methods, one module each, over :mod:`Code.methods.base` (the ``Method`` class and the registry).

Importing this package registers every method; the order here is the order of ``--method`` choices.
"""
from Code.methods.base import (REGISTRY, Method, build_method, labeled_strong_view, method_names, method_state,
                               method_teacher, register, strong_views, uses_unlabeled)
from Code.methods import supervised, fixmatch, hermes, mean_teacher  # noqa: F401,E402  (registration)
from Code.methods import freematch  # noqa: F401,E402  (registration)
from Code.methods import bcp  # noqa: F401,E402  (registration)
from Code.methods import unimatch  # noqa: F401,E402
from Code.methods import abd  # noqa: F401,E402  (registration)

__all__ = ["REGISTRY", "Method", "build_method", "labeled_strong_view", "method_names", "method_state",
           "method_teacher", "register", "strong_views", "uses_unlabeled"]
