"""Work started from synchronous code and finished without the caller waiting: fire-and-forget
coroutines kept referenced until done (so that they are not garbage-collected mid-flight), and the
in-process shortcut of running a coroutine that never suspends right away."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run_inline(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` to completion now; it must not suspend (in-process state and stores never do)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an in-process operation suspended; it should have been spawned as a task")


class Background:
    """A set of fire-and-forget tasks; with ``inline=True`` coroutines run at once instead (see run_inline)."""

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self.inline:
            run_inline(coro)
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pending(self) -> list[asyncio.Task[Any]]:
        return [t for t in self._tasks if not t.done()]

    async def drain(self, timeout: float) -> None:
        """Let the tasks still running finish, for at most ``timeout`` seconds."""
        pending = self.pending()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
