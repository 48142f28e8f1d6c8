"""Routing: aliases to deployments, load balancing, breakers, budgets, rate limits, failure classes."""

from .breaker import Breakers, Gate, Pool
from .budget import Budget
from .classify import Failure, classify
from .limits import DeploymentLimits
from .router import Candidate, Deployment, Policy, Route, Router
from .stats import DeploymentStats, LatencyWindow

__all__ = [
    "Breakers", "Budget", "Candidate", "Deployment", "DeploymentLimits", "DeploymentStats", "Failure", "Gate",
    "LatencyWindow", "Policy", "Pool", "Route", "Router", "classify",
]
