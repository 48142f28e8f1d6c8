from .adapters import build_provider
from .base import Dialect, Provider
from .sse import SSEEvent, iter_sse, iter_sse_batches

__all__ = ["Dialect", "Provider", "SSEEvent", "build_provider", "iter_sse", "iter_sse_batches"]
