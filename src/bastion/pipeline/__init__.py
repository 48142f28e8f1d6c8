from .context import RequestContext
from .gateway import Gateway, Result

__all__ = ["Gateway", "RequestContext", "Result"]
