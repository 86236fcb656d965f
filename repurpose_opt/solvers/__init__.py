"""Solver backends, one module each, behind one registry (see ``registry.py`` and ``template.py``)."""

from .base import Backend, BackendResult, Option
from .registry import list_backends

__all__ = ["Backend", "BackendResult", "Option", "list_backends"]
