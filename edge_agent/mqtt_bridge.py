"""The engine and the MQTT link, joined: a subscriber of the engine's state changes, intents and transcripts, and
the place where inbound commands (say, mute, sensitivity, timers, entity states) become engine events.

Nothing here writes turn state: inbound commands are posted to the engine's control queue, outbound messages go to
the link (which persists and sends them on its own threads, never on the caller's).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from . import turn_events as ev
from .errors import EdgeAgentError
from .intent import IntentCall
from .turn_events import State

if TYPE_CHECKING:
    from .engine import Engine
    from .mqtt import MqttLink
    from .turn import Turn

log = logging.getLogger(__name__)


class MqttBridge:
    def __init__(self, engine: Engine, link: MqttLink) -> None:
        self.engine = engine
        self.link = link
        self.s = engine.s

    def attach(self) -> None:
        """Subscribe to the engine and route the link's inbound callbacks (called once, before the loop runs)."""
        e = self.engine
        e.state_listeners.append(self.publish_state)
        self.link.on_say = e.announce
        self.link.on_announce = lambda text, preannounce: e.announce(text, preannounce=preannounce)
        self.link.on_ask = lambda req: e.post(ev.Announce(time.monotonic(), req.question, req.preannounce,
                                                           then="ask", ask=req))
        self.link.on_conversation = lambda start: e.post(ev.Announce(time.monotonic(), start.text,
                                                                     start.preannounce, then="conversation"))
        e.turn_listeners.append(self.publish_ask_result)
        self.link.on_mute = e.set_mute
        self.link.on_timer = self.on_timer_command
        self.link.on_sensitivity = e.set_sensitivity

    def subscribe_entity_states(self) -> None:
        """Entity state topics keep the handler's view of the home current (answers come from the home)."""
        brain = self.engine.brain
        if brain is None:
            return
        for entity in brain.home.entities.values():
            if entity.state_topic:
                self.link.subscribe(entity.state_topic,
                                    lambda _t, text, eid=entity.id: brain.handler.set_state(eid, text.strip()))

    # ---------------------------------------------------------------- outbound
    def publish_state(self, state: State, previous: State) -> None:
        try:
            self.link.publish_state(state.value)
        except Exception as e:  # noqa: BLE001
            log.warning("state publish failed: %s", e)

    def publish_transcript(self, text: str) -> None:
        try:
            self.link.publish_transcript(text)
        except Exception as e:  # noqa: BLE001
            log.warning("transcript publish failed: %s", e)

    def publish_intent(self, call: Any, result: Any, turn_id: str | None) -> bool:
        """Publish an executed intent and its device commands; True when they wait in the outbox (broker away)."""
        commands = getattr(result, "commands", []) if result else []
        try:
            self.link.publish_intent(call, turn_id=turn_id, text=call.text, commands=commands,
                                     dry_run=self.s.mqtt.dry_run)
        except Exception as e:  # noqa: BLE001 - the outbox keeps it; a publish error never ends a turn
            log.error("intent publish failed: %s", e)
        # Tell the truth when something for the home waits in the outbox; a local answer (time, timers) is not
        # delayed by the broker and needs no such note.
        return bool(commands) and not self.link.connected and not self.s.mqtt.dry_run

    def publish_ask_result(self, turn: Turn, record: dict[str, Any]) -> None:
        """The answer to an automation's question (or that none came) on ``ask/result``, once its turn ended."""
        if turn.kind != "answer" or turn.ask is None:
            return
        result = dict(turn.stages.get("ask_result") or {"answer": None, "sentence": turn.transcript, "slots": {}})
        result.pop("id", None)  # the link adds the message's own id; the question's id is ask_id
        payload = {"ask_id": turn.ask.id, **result, "turn_id": turn.turn_id,
                   "event_type": "answer" if result.get("answer") else "no_match"}
        if not result.get("answer"):
            payload["reason"] = "no_speech" if turn.outcome == "no_speech" else "no_match"
        try:
            self.link.publish(self.link.topics.ask_result, payload, qos=1)
        except Exception as e:  # noqa: BLE001
            log.error("ask result publish failed: %s", e)

    def arbitrate(self, model: str, score: float, turn_id: str) -> None:
        """Several rooms, one broker: listening has started (nothing is lost); if another device heard the wake word
        better within the arbitration window, the turn is dropped silently (an event, decided by the controller)."""
        try:
            self.link.publish_hotword(model, score)
        except Exception as e:  # noqa: BLE001
            log.debug("hotword publish: %s", e)
        arbiter = self.link.arbiter

        def decide() -> None:
            if not arbiter.claim(score):
                log.info("another device heard the wake word better: not answering")
                self.engine.post(ev.ArbitrationLost(time.monotonic(), turn_id))

        threading.Thread(target=decide, name="arbitration", daemon=True).start()

    # ---------------------------------------------------------------- inbound
    def on_timer_command(self, cmd: dict[str, Any]) -> None:
        """Inbound timer/set (already validated by the link)."""
        timers = self.engine.timers
        if timers is None:
            return
        area = self.s.site.area or None
        action, sel = cmd["action"], {k: cmd[k] for k in ("name",) if k in cmd}
        try:
            if action == "start":
                t = timers.start(seconds=cmd["seconds"], name=cmd.get("name"), area=area)
                log.info("timer %s started over MQTT (%.0f s)", t.id, cmd["seconds"])
            elif action == "cancel":
                timers.cancel(**sel) if sel else timers.cancel_all()
            elif action == "pause":
                timers.pause(**sel)
            elif action == "resume":
                timers.unpause(**sel)
            elif action == "add":
                timers.increase(cmd["seconds"], **sel)
            elif action == "remove":
                timers.decrease(cmd["seconds"], **sel)
            elif action == "status":
                self.engine.announce(self.engine.brain.handler.handle(IntentCall("HassTimerStatus"), area).speech)
        except EdgeAgentError as e:
            log.warning("MQTT timer %s: %s", action, e.message)
