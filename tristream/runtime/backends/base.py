"""What every backend offers the pipeline, whatever process the roles live in."""
from __future__ import annotations

import time


class Backend:
    """Subclasses create the channels and roles, and implement ``send_inference``, ``send_env_worker``,
    ``learner_get`` (the next message for the learner, telemetry kept aside; ``timeout=0`` must not wait)
    and ``close``."""

    env_inboxes: dict
    telemetry: "TelemetrySink"  # noqa: F821

    def learner_poll(self) -> object | None:
        """The next message for the learner if one is there now, else None (never waits; the serial
        backend pumps its roles until one has a message or none can move)."""
        try:
            return self.learner_get(timeout=0.0)
        except TimeoutError:
            return None

    def send_env_workers(self, msg) -> None:
        for w in self.env_inboxes:
            self.send_env_worker(w, msg)

    def drain(self, seconds: float) -> None:
        """Keep taking telemetry for ``seconds`` (what roles sent just before a measured window closed)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.telemetry.take(self.learner_get(timeout=max(0.01, deadline - time.monotonic())))
            except (TimeoutError, RuntimeError):
                return
