"""Multi-room wake arbitration: every device that heard the wake word publishes its score; within a short window
the best score answers and the others stay silent. ``arbitrate`` is the pure decision, ``WakeArbiter`` the wiring."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .mqtt_inbound import InboundError, decode_text, is_number, maybe_json

if TYPE_CHECKING:
    from .mqtt import MqttLink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WakeClaim:
    """One device's claim to a wake word: its score, its wall clock (informational) and our receive time."""

    site_id: str
    score: float
    t: float = 0.0
    received: float = 0.0  # local monotonic seconds when this device saw the claim (clock skew between devices
    # does not matter)


def arbitrate(own: WakeClaim, others: Iterable[WakeClaim], window_s: float) -> bool:
    """True if ``own`` should answer: best score among the claims seen within ``window_s`` of it wins; ties go to the
    smallest site_id, so every device reaches the same decision from the same claims."""
    rivals = [c for c in others if c.site_id != own.site_id and abs(c.received - own.received) <= window_s]
    best = min([own, *rivals], key=lambda c: (-c.score, c.site_id))
    return best.site_id == own.site_id


def parse_wake_claim(payload: bytes, max_bytes: int) -> WakeClaim:
    value = maybe_json(decode_text(payload, max_bytes))
    if not isinstance(value, dict):
        raise InboundError("wake claim must be a JSON object")
    site, score, t = value.get("site_id"), value.get("score"), value.get("t", 0.0)
    if not isinstance(site, str) or not site:
        raise InboundError("wake claim needs a site_id string")
    if not is_number(score) or not 0.0 <= score <= 1.0:
        raise InboundError(f"wake claim score must be a number 0..1, got {score!r}")
    if not is_number(t):
        raise InboundError("wake claim t must be a number")
    return WakeClaim(site_id=site, score=float(score), t=float(t))


class WakeArbiter:
    """Several rooms, one broker: publish our wake score, wait a short window, answer only if ours is best."""

    def __init__(self, link: MqttLink, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._link = link
        self.window_s = window_s
        self._clock = clock
        self._claims: deque[WakeClaim] = deque(maxlen=64)
        self._lock = threading.Lock()

    def receive(self, claim: WakeClaim) -> None:
        """Record another device's claim (called from the network thread)."""
        stamped = WakeClaim(claim.site_id, claim.score, claim.t, self._clock())
        with self._lock:
            self._claims.append(stamped)

    def claim(self, score: float) -> bool:
        """Announce our wake score and block for the window; True if this device should answer.

        Without a connection (or with a zero window) there is nobody to defer to: answer.
        """
        if self.window_s <= 0 or not self._link.connected:
            return True
        own = WakeClaim(self._link.site_id, float(score), time.time(), self._clock())
        body = json.dumps({"site_id": own.site_id, "score": round(own.score, 6), "t": round(own.t, 3)})
        if not self._link.publish_direct(self._link.topics.arbitration, body, qos=0):
            return True
        time.sleep(self.window_s)
        with self._lock:
            claims = list(self._claims)
        won = arbitrate(own, claims, self.window_s)
        seen = [(c.site_id, round(c.score, 3)) for c in claims if abs(c.received - own.received) <= self.window_s]
        log.info("wake arbitration: ours %.3f vs %s -> %s", own.score, seen or "nobody", "answer" if won else "defer")
        return won

