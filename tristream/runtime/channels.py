"""Channels: bounded FIFO queues between roles.

Every role owns one inbox and reads only from it; senders hold the inbox's channel. Two
implementations share one small interface (``put``, ``get``): ``ProcessChannel`` crosses processes
(bounded: a full inbox blocks the sender, which is the back-pressure), ``SerialChannel`` lives in one
process for the serial backend, where one event loop pumps every role.

    >>> ch = SerialChannel()
    >>> ch.put("hello"); ch.get()
    'hello'
"""
from __future__ import annotations

import collections
import queue
from typing import Any

Empty = queue.Empty


class SerialChannel:
    """In-process FIFO. ``get`` never blocks: with one event loop nobody else could fill it."""

    def __init__(self, maxsize: int = 0):
        self._items: collections.deque = collections.deque()

    def put(self, item: Any, timeout: float | None = None) -> None:
        self._items.append(item)

    def get(self, timeout: float | None = None) -> Any:
        if not self._items:
            raise Empty
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)


class ProcessChannel:
    """A bounded multiprocessing queue. ``put`` blocks when full (raising ``queue.Full`` after timeout)."""

    def __init__(self, ctx, maxsize: int = 64):
        self._queue = ctx.Queue(maxsize)

    def put(self, item: Any, timeout: float | None = None) -> None:
        self._queue.put(item, timeout=timeout)

    def get(self, timeout: float | None = None) -> Any:
        return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()

    def qsize(self) -> int:
        try:
            return self._queue.qsize()
        except NotImplementedError:  # macOS
            return -1

    def abandon(self) -> None:
        """Give the queue up (its reader is dead): never block at exit flushing what nobody will read."""
        self._queue.cancel_join_thread()
