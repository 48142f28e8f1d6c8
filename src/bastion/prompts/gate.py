"""The eval gate of a promotion: a prompt whose ``eval:`` block lists the target label may only be
promoted there if its eval suite passes.

``PromptRegistry.promote`` runs no evals (the gateway and tests promote freely); the CLI calls
``run_gate`` first. The eval runner (``bastion.evals``) is imported lazily: when it is not installed the
gate fails closed with a message saying so, and the CLI's ``--skip-eval`` is the explicit way around it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .registry import PromptRegistry

EVALS_MODULE = "bastion.evals"


def _find(module: str) -> bool:
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def run_gate(registry: PromptRegistry, name: str, version: int, suite_path: str) -> tuple[bool, str]:
    """Run ``suite_path`` against ``name@version``; (passed, explanation). Never raises: a missing runner,
    a missing suite or a runner that fails all answer (False, what happened and what to do)."""
    ref = f"{name}@{version}"
    if not _find(EVALS_MODULE):
        return False, (f"{ref} must pass the eval suite {suite_path} before this promotion, but the eval runner "
                       f"({EVALS_MODULE}) is not available in this installation; pass --skip-eval to promote "
                       "without it")
    evals = importlib.import_module(EVALS_MODULE)
    gate = getattr(evals, "gate_prompt", None)
    if gate is None:
        return False, f"{EVALS_MODULE} has no gate_prompt(); cannot run {suite_path} (pass --skip-eval to promote)"
    if not Path(suite_path).exists():
        return False, f"the eval suite {suite_path} of {ref} does not exist (paths are relative to the working directory)"
    try:
        passed, report = gate(suite_path, ref)
    except Exception as e:  # noqa: BLE001 - fail closed: a gate that cannot run does not let the prompt through
        return False, f"the eval gate for {ref} could not run ({type(e).__name__}: {e}); the label was not moved"
    return bool(passed), str(report)
