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
import threading
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

    def close_own_writer(self) -> None:
        """Close this process's write end of the pipe. Once every other writer is dead too, a read blocked on
        a half-written message ends (EOF). multiprocessing closes it only after this process has put
        something, which a reader never does."""
        self._queue._writer.close()


class ThreadedReader:
    """Reads a :class:`ProcessChannel` in a thread of its own, so that a read can always time out.

    A writer killed (``kill -9``) in the middle of a message leaves half of it in the pipe, and a read then
    blocks for good: the reading role could never notice the death nor replace the channel. Here only the
    thread blocks; :meth:`abandon` closes this process's write end so the stuck read ends once the writers
    are gone. The hand-over queue holds one message, so senders still feel the channel's back-pressure.
    """

    def __init__(self, channel: ProcessChannel):
        self.channel = channel
        self._local: queue.Queue = queue.Queue(maxsize=1)
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="inbox-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._abandoned.is_set():
            try:
                item = self.channel.get(timeout=0.5)
            except Empty:
                continue
            except (EOFError, OSError, ValueError):  # the pipe is closed or broken: the channel was given up
                return
            while not self._abandoned.is_set():
                try:
                    self._local.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def get(self, timeout: float | None = None) -> Any:
        return self._local.get(timeout=timeout) if timeout is None or timeout > 0 else self._local.get_nowait()

    def abandon(self) -> None:
        self._abandoned.set()
        self.channel.abandon()
        self.channel.close_own_writer()
