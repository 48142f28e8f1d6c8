"""Assertions on answers: a registry of small classes, one per ``type``. Import registers them all."""

from __future__ import annotations

from . import judge, runtime, semantic, structured, text  # noqa: F401 - registers the types
from .base import REGISTRY, Assertion, CheckContext, register

__all__ = ["REGISTRY", "Assertion", "CheckContext", "register"]
