"""Retry only what may pass on a second try."""

from __future__ import annotations

from typing import Any

from multiarch.errors import TransientError


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry a TransientError, fail everything else at once."""
    try:
        state.result()
    except TransientError:
        return True
    except Exception:
        return False
    return False
