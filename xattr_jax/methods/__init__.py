"""Attribution methods, one module per family; ``available()`` lists their names."""

from . import attention, cam, excitation, gradient, ig, lrp, rsp  # noqa: F401  (registers the methods)
from .base import Method, available, get_method, register

__all__ = ["Method", "available", "get_method", "register"]
