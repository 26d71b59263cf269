"""One turn's answer, on its own thread: transcript → brain → sentences → synthesis → speaker.

The responder never writes turn state: it reports what happened as controller events (``Transcribed``,
``IntentExecuted`` through the engine, ``FirstToken``, ``ReplyStarted``, ``ResponseDone``) and keeps its own
playback record (the segments it queued), from which ``ResponseDone`` carries what was actually spoken and when.
Its control token is the turn's ``cancel`` event; every wait has a deadline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import turn_events as ev
from .audio_io import Segment
from .brain_sound import TurnAudio
from .errors import EdgeAgentError
from .listener import wait_speculation
from .text import SentenceBuffer, split_sentences
from .turn import Turn, playback_gaps, playback_times, spoken_text
from .wake_tail import mentions_wake, strip_wake_words

log = logging.getLogger(__name__)

HUB_OFFLINE_NOTE = "The hub is offline; I'll send that when it's back."
SPECULATION_WAIT_S = 10.0  # the speculative transcript is at most one decode away; past this, transcribe again
SYNTH_JOIN_S = 30.0  # a synthesis thread that has not ended by then is abandoned (logged), never waited on forever
PLAYBACK_WAIT_S = 120.0  # the longest reply we wait to finish playing
WAKE_SETTLE_MAX_S = 10.0  # an intent waits this long at most for its turn's second look (a failed look accepts)

_current = threading.local()  # the Responder running on this thread (brain callbacks find their turn through it)


def llm_summary(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Token counts and times over a turn's LLM calls: what evaluating the uncached prompt and generating cost."""
    if not calls:
        return {}
    n_prompt = sum(int(c.get("n_prompt", 0)) for c in calls)
    n_cached = sum(int(c.get("n_cached", 0)) for c in calls)
    return {"llm_calls": len(calls), "llm_prompt_tokens": n_prompt, "llm_uncached_tokens": n_prompt - n_cached,
            "llm_prompt_s": round(sum(float(c.get("t_prompt_s", 0.0)) for c in calls), 4),
            "llm_gen_tokens": sum(int(c.get("n_gen", 0)) for c in calls),
            "llm_gen_s": round(sum(float(c.get("t_gen_s", 0.0)) for c in calls), 4),
            "llm_wait_s": round(sum(float(c.get("wait_s", 0.0)) for c in calls), 4)}


def says_wake_phrase(responders: list[Responder], phrases: list[str], now: float, echo_tail_s: float) -> bool:
    """Half-duplex guard: without echo cancellation the microphone hears the reply, so a wake word inside the text
    being played (or played within the echo tail) is the assistant's own voice, not the user's."""
    for r in responders:
        for seg in list(r.segments):
            recent = seg.played > 0 and (not seg.done.is_set() or now - (seg.t_done or now) < echo_tail_s)
            if recent and mentions_wake(seg.text, phrases):
                return True
    return False


def _for_turn(tts: Any) -> Any:
    """The voice a turn speaks through (``TextToSpeech.for_turn``); a test's plain fake is used as it is."""
    for_turn = getattr(tts, "for_turn", None)
    return for_turn() if for_turn is not None else tts


def current() -> Responder | None:
    """The responder whose thread this is (None on other threads)."""
    return getattr(_current, "responder", None)


class Responder:
    """Answers one turn. ``start()`` runs it on a thread named after its kind."""

    def __init__(self, turn: Turn, *, post: Callable[[ev.Event], None], brain: Any, tts: Any, speaker: Any,
                 first_clause_words: int, area: str | None, wake_phrases: list[str],
                 stream: Any = None, speculation: Any = None, text: str | None = None,
                 on_transcript: Callable[[str], None] | None = None, ask: Any = None) -> None:
        self.turn_id = turn.turn_id
        self.cancel = turn.cancel
        self.wake_settled = turn.wake_settled
        self.hold_until = turn.hold_until  # an early end on a source without echo cancel: see ``play``
        self.after_wake = turn.t_wake is not None
        self.post = post
        # the turn's view of the voice: a remote engine's keeps its local fallback for the rest of the turn
        self.brain, self.tts, self.speaker = brain, _for_turn(tts), speaker
        self.first_clause_words = first_clause_words
        self.area = area
        self.wake_phrases = wake_phrases
        self.stream, self.speculation, self.text = stream, speculation, text
        self.heard_before: str | None = None  # set with the transcript: the words heard ahead of the request
        self.on_transcript = on_transcript
        self.ask = ask  # an automation's question this turn answers: matched, not sent to the brain
        self.segments: list[Segment] = []
        self.reply_text = ""
        self.used_llm = False
        self.outcome: str | None = None
        self.error: str | None = None
        self.hub_offline = False  # set by the engine when an intent of this turn waits in the outbox
        self.stages: dict[str, Any] = {}
        self.thread: threading.Thread | None = None

    def start(self, name: str = "responder") -> threading.Thread:
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()
        return self.thread

    # ---------------------------------------------------------------- the thread
    def run(self) -> None:
        _current.responder = self
        try:
            text = self.text if self.text is not None else self._transcribe()
            if text is None:
                return
            if self.ask is not None:
                from .ask import match_answer

                self.stages["ask_result"] = match_answer(self.ask, text)
                log.info("answer to %s: %s", self.ask.id, self.stages["ask_result"])
                return
            if not text:
                self.outcome = "empty"
                self.speak_fixed("not_understood")
            else:
                self._answer(text)
        except EdgeAgentError as e:
            log.error("turn %s failed: error[%s] %s", self.turn_id, e.code, e.message)
            self.outcome, self.error = "error", f"{e.code}: {e.message}"
            if not self.cancel.is_set():
                self.speak_fixed("error")
        except Exception as e:  # noqa: BLE001 - a turn's failure is spoken and logged, never the loop's
            log.exception("turn %s failed", self.turn_id)
            self.outcome, self.error = "error", repr(e)
            if not self.cancel.is_set():
                self.speak_fixed("error")
        finally:
            _current.responder = None
            self._wait_playback()
            self._record_tts()
            gaps = playback_gaps(self.segments)
            if gaps is not None:
                self.stages["playback_gaps"] = gaps
            t_first, t_end = playback_times(self.segments)
            self.post(ev.ResponseDone(time.monotonic(), self.turn_id, reply_text=self.reply_text,
                                      reply_spoken=spoken_text(self.segments), used_llm=self.used_llm,
                                      outcome=self.outcome, error=self.error, t_first_audio=t_first,
                                      t_playback_end=t_end, stages=self.stages))

    def _transcribe(self) -> str | None:
        t0, c0 = time.monotonic(), time.process_time()
        result, speculative = wait_speculation(self.speculation, SPECULATION_WAIT_S)
        if result is None:
            result = self.stream.finish()
        elif self.speculation is not None:
            self.stages["stt_speculation_cpu_s"] = round(self.speculation.cpu_s, 4)
            t_done = getattr(self.speculation, "t_done", None)
            if t_done is not None:  # the transcript waited this long for the turn to end: what preemption could win
                self.stages["stt_ready_before_turn_s"] = round(t0 - t_done, 4)
        # process CPU while the final transcript was awaited: the decode (its own threads included) plus the loop's
        # wake/VAD share (about 0.05 CPU per second of audio)
        self.stages["stt_final_cpu_s"] = round(time.process_time() - c0, 4)
        heard = result.text
        # only a turn opened by the wake word can start with its misheard tail
        text = strip_wake_words(heard, self.wake_phrases, fuzzy=self.after_wake)
        at = heard.casefold().rfind(text.casefold()) if text else -1
        self.heard_before = heard[:at] if at >= 0 else None  # the words ahead of the request (the wake phrase)
        if text != heard.strip():
            log.info("transcript: %r (heard %r)", text, heard)
        else:
            log.info("transcript: %r", text)
        self.stages["stt_wait_s"] = round(time.monotonic() - t0, 4)
        # which engine served, and why the server did not (stt.fallback): the names the LLM's calls use
        reason = getattr(result, "fallback_reason", "")
        self.stages["stt"] = {"backend": getattr(result, "engine", ""),
                              **({"fallback_reason": reason} if reason else {})}
        self.post(ev.Transcribed(time.monotonic(), self.turn_id, text, heard=heard, speculative=speculative,
                                 compute_s=getattr(result, "compute_s", None)))
        if text and self.on_transcript is not None:
            self.on_transcript(text)
        return text

    def _sound(self) -> Any:
        """The sound tier's scorer: sentences against this turn's audio, after the words heard ahead of the request;
        None for a turn without audio or whose request could not be found in the transcript."""
        stream, before = self.stream, self.heard_before
        if stream is None or before is None:
            return None
        return TurnAudio(stream, before, lambda h: strip_wake_words(h, self.wake_phrases, fuzzy=self.after_wake))

    def _answer(self, text: str) -> None:
        c0 = time.process_time()
        response = self.brain.respond(text, area=self.area, cancel=self.cancel, sound=self._sound())
        sentences = SentenceBuffer(first_clause_words=self.first_clause_words)
        synth_q: queue.Queue[tuple[str, bool] | None] = queue.Queue()  # (sentence, worth caching)
        synth = threading.Thread(target=self._synth_worker, args=(synth_q,), name="synth", daemon=True)
        synth.start()
        first_token_sent = False
        try:
            for fragment in response:
                if self.cancel.is_set():
                    break
                t_tok = getattr(response, "t_first_token", None)
                if t_tok and not first_token_sent:
                    first_token_sent = True
                    self.post(ev.FirstToken(t_tok, self.turn_id))
                if not self.reply_text:
                    self.stages["brain_first_piece_cpu_s"] = round(time.process_time() - c0, 4)
                self.reply_text += fragment
                # Fast-path replies repeat ("Turned on the kitchen light."): cached. An LLM's sentences rarely do:
                # caching them would only fill memory with one-off audio.
                cacheable = not getattr(response, "used_llm", False)
                for sentence in self._pieces(sentences, fragment):
                    synth_q.put((sentence, cacheable))
            if not self.cancel.is_set():
                cacheable = not getattr(response, "used_llm", False)
                for sentence in sentences.flush():
                    synth_q.put((sentence, cacheable))
                if self.hub_offline:  # tell the truth: the command waits in the outbox
                    self.reply_text += " " + HUB_OFFLINE_NOTE
                    synth_q.put((HUB_OFFLINE_NOTE, True))
        finally:
            synth_q.put(None)
            # process CPU of the whole answer: the fast path or the LLM (prompt and generation, on llama.cpp's own
            # threads), overlapped with the synthesis of the first sentences
            self.stages["brain_cpu_s"] = round(time.process_time() - c0, 4)
            self.used_llm = bool(getattr(response, "used_llm", False))
            t_tok = getattr(response, "t_first_token", None)
            if t_tok and not first_token_sent:
                self.post(ev.FirstToken(t_tok, self.turn_id))
            timings = getattr(response, "timings", None)
            if isinstance(timings, dict) and timings:
                self.stages["brain"] = timings
                self.stages.update(llm_summary(timings.get("llm_calls") or []))
            rewrites = getattr(response, "rewrites", None)
            if rewrites:  # LLM sentences the truth guard would not let the voice say, and what it said instead
                self.stages["truth_rewrites"] = list(rewrites)
            if isinstance(getattr(response, "error", None), str):
                self.outcome, self.error = "error", response.error  # e.g. the LLM timed out (apology spoken)
            synth.join(SYNTH_JOIN_S)
            if synth.is_alive():
                log.error("turn %s: synthesis did not finish within %.0f s; abandoned", self.turn_id, SYNTH_JOIN_S)

    def _pieces(self, sentences: SentenceBuffer, fragment: str) -> list[str]:
        """The pieces to speak that ``fragment`` completes. A reply the phrase cache holds whole (a warmed handler
        reply: "Today is Wednesday, December 2, 2026.") goes whole when nothing is pending before it: cut at its
        first clause, neither part is in the cache and both are synthesized while the user waits (the thirteenth
        session's bench: the date's reply 0.37 CPU s on this machine, warmed but never replayed)."""
        text = fragment.strip()
        holds = getattr(getattr(self.tts, "phrases", None), "__contains__", None)  # a voice may keep no cache
        if text and not sentences.pending.strip() and holds is not None and holds(text):
            return [text]
        return sentences.push(fragment)

    def _synth_worker(self, q: queue.Queue[tuple[str, bool] | None]) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            if self.cancel.is_set():
                continue
            sentence, cacheable = item
            c0, t0 = time.process_time(), time.monotonic()
            try:
                # Repeated replies come from the bounded phrase cache, synthesized once. An LLM turn's sentence is
                # not kept, but one said before is replayed: its tool call's reply is the handler's own words
                # ("Turned off the kitchen light."), often warmed already (tts.warm_replies)
                audio = self.tts.cached(sentence) if cacheable else self._replayed(sentence)
                if audio is None:
                    audio = self.tts.synthesize_all(sentence)
            except Exception as e:  # noqa: BLE001
                log.error("TTS failed for %r: %s", sentence, e)
                self._tts_failed()
                continue
            if "tts_first_s" not in self.stages:
                # the first sentence's synthesis is on the critical path; its CPU overlaps the LLM's generation
                self.stages["tts_first_s"] = round(time.monotonic() - t0, 4)
                self.stages["tts_first_cpu_s"] = round(time.process_time() - c0, 4)
            self.stages["tts_s"] = round(self.stages.get("tts_s", 0.0) + time.monotonic() - t0, 4)
            self.play(audio, sentence)

    # ---------------------------------------------------------------- output
    def play(self, audio: np.ndarray, text: str) -> None:
        if self.cancel.is_set():
            return
        # The microphone cannot tell the user going on from this reply (no echo cancel): the first audio of an
        # early-ended turn waits until the normal silence is over, and any turn's while the engine hears speech
        # that may be the request going on (``hold``, from the loop thread); the engine listens meanwhile.
        while not self.segments and self.hold_until is not None and self.hold_until > time.monotonic():
            if self.cancel.wait(self.hold_until - time.monotonic()):
                return
        seg = Segment(audio=audio, rate=self.tts.sample_rate, text=text)
        self.segments.append(seg)
        if len(self.segments) == 1:
            self.post(ev.ReplyStarted(time.monotonic(), self.turn_id))
        self.speaker.play(seg)

    def may_act(self, call: Any = None) -> bool:
        """May this turn execute ``call`` now? Not before its wake word is settled (a doubtful detection's second
        look has been handled: a dropped one's ``cancel`` is set by then), and never once cancelled. Called on this
        responder's thread, just before the handler runs; the wait is recorded as ``stages.wake_wait_s``."""
        if not self.wake_settled.is_set():
            t0 = time.monotonic()
            if not self.wake_settled.wait(WAKE_SETTLE_MAX_S):
                log.warning("the second look at this turn's wake word took over %.0f s: acting on %s anyway",
                            WAKE_SETTLE_MAX_S, getattr(call, "name", "the request"))
            self.stages["wake_wait_s"] = round(time.monotonic() - t0, 4)
        if self.cancel.is_set():
            log.info("turn %s was cancelled before %s ran: nothing executed", self.turn_id,
                     getattr(call, "name", "its intent"))
            return False
        return True

    def hold(self, until: float) -> bool:
        """Keep the first audio back until ``until`` (monotonic), unless it already plays; False when it does.
        Called from the loop thread: voice heard after the endpoint may be the request going on."""
        if self.segments:
            return False
        self.hold_until = max(self.hold_until or 0.0, until)
        return True

    def _replayed(self, sentence: str) -> np.ndarray | None:
        """The phrase cache's audio of a sentence said before, or None; synthesizes nothing."""
        phrases = getattr(self.tts, "phrases", None)
        lookup = getattr(phrases, "lookup", None)
        return lookup(sentence) if lookup is not None else None

    def _tts_failed(self) -> None:
        """A sentence the voice could not say (a TTS server away with no local voice): the turn's fixed apology
        once, from the phrase cache, or the error cue if even that cannot be had: never silence."""
        if self.stages.get("tts_apology") or self.cancel.is_set():
            return
        try:
            phrases = getattr(self.tts, "phrases", None)
            self.play(self.tts.cached("error"), phrases.text_of("error") if phrases is not None else "error")
            self.stages["tts_apology"] = "phrase"
        except Exception as e:  # noqa: BLE001
            log.error("TTS: no apology phrase either (%s): the error cue", e)
            self.play(self.tts.cue_tone("error"), "")
            self.stages["tts_apology"] = "cue"

    def _record_tts(self) -> None:
        """Which backend served this turn's speech and why it fell back (``stages.tts``, as ``stages.stt``)."""
        record = getattr(self.tts, "turn_record", None)
        if record is not None:
            self.stages["tts"] = record()

    def speak_fixed(self, key: str) -> None:
        """A fixed phrase by its key (``tts.phrases`` may replace its words), from the phrase cache."""
        phrases = getattr(self.tts, "phrases", None)
        text = phrases.text_of(key) if phrases is not None else key
        self.reply_text = text
        self.play(self.tts.cached(key), text)

    def speak_text(self, text: str, preannounce: bool = False) -> None:
        """An announcement: sentence by sentence (after a chime when ``preannounce``), stopping when cancelled."""
        _current.responder = self
        try:
            if preannounce:
                self.play(self.tts.cue_tone("announce"), "")
            for sentence in split_sentences(text) or [text]:
                if self.cancel.is_set():
                    break
                self.play(self.tts.synthesize_all(sentence), sentence)
        except Exception as e:  # noqa: BLE001
            log.error("announcement failed: %s", e)
            self.outcome, self.error = "error", repr(e)
        finally:
            _current.responder = None
            self._wait_playback()
            self._record_tts()
            t_first, t_end = playback_times(self.segments)
            self.post(ev.ResponseDone(time.monotonic(), self.turn_id, reply_text=text,
                                      reply_spoken=spoken_text(self.segments), outcome=self.outcome,
                                      error=self.error, t_first_audio=t_first, t_playback_end=t_end,
                                      stages=self.stages))

    def _wait_playback(self) -> None:
        """Until every queued segment has played; once cancelled, only until the flush has reached them (the
        speaker stops within one block), so the played share and times are final."""
        deadline = time.monotonic() + PLAYBACK_WAIT_S
        for seg in list(self.segments):
            while not seg.done.wait(0.02):
                now = time.monotonic()
                if self.cancel.is_set():
                    deadline = min(deadline, now + 0.5)
                if now > deadline:
                    return
