from .router import Deployment, Route, Router

__all__ = ["Deployment", "Route", "Router"]
