"""Where the learner side keeps the roles' telemetry: the latest counters per role always, the trace
spans only while someone records them (the throughput benchmark), so a long run's memory stays flat."""
from __future__ import annotations

from tristream.runtime.messages import Telemetry


class TelemetrySink:
    def __init__(self):
        self.latest: dict[str, dict] = {}
        self.recorded: list[Telemetry] | None = None

    def take(self, msg) -> bool:
        """Keep ``msg`` if it is telemetry (returns True); other messages are the caller's."""
        if not isinstance(msg, Telemetry):
            return False
        self.latest[msg.role] = msg.stats
        if self.recorded is not None:
            self.recorded.append(msg)
        return True

    def record(self) -> None:
        self.recorded = []

    def stop(self) -> list[Telemetry]:
        out, self.recorded = self.recorded or [], None
        return out
