"""Preemptive generation at the first pause (``llm.preempt``, ``edge_agent/preempt.py``): the reuse/discard decision
with plain values, the brain's flow over a scripted backend (the port is pure logic there), then the real
Qwen2.5-Coder-0.5B model: a preempted reply is the same reply, with fewer tokens generated after the final
transcript, and other words throw it away."""

from __future__ import annotations

import dataclasses
import threading
import time
from types import SimpleNamespace

import pytest

from edge_agent.brain import Brain
from edge_agent.config import LlmSettings, Settings
from edge_agent.llm import Llm, LocalLlamaBackend
from edge_agent.llm_backend import LLM_BACKENDS, CallStats
from edge_agent.preempt import REUSE, Preempted, PreemptStop, preempt_key, reuse_verdict

from .conftest import require_model
from .test_brain import HOME_YAML, ScriptedBackend

MSGS = [{"role": "system", "content": "S"}, {"role": "user", "content": "why is the sky blue?"}]

# ----------------------------------------------------------------------------------------------- pure decision


def _done(**kw) -> Preempted:
    pre = Preempted(**{"words": "why is the sky blue?", "area": "Kitchen", "version": 3, "messages": MSGS,
                       "kind": "answer", **kw})
    pre.work = object()
    pre.done.set()
    return pre


@pytest.mark.parametrize(("change", "verdict"), [
    ({}, REUSE),
    ({"words": " why is the sky blue? "}, REUSE),  # the turn strips its words as the preemption did
    ({"area": "kitchen"}, REUSE),
    ({"words": "why is the sky blue at noon?"}, "words changed"),  # the user went on
    ({"words": "Why is the sky blue?"}, "words changed"),  # other tokens: never looser than the prompt
    ({"area": "Bedroom"}, "area changed"),
    ({"version": 4}, "history changed"),  # a turn was committed (or the history forgotten) in between
    ({"kind": "tool_call"}, "another kind of call"),
    ({"messages": [*MSGS[:1], {"role": "system", "content": "ctx"}, *MSGS[1:]]}, "prompt changed"),
])
def test_reuse_only_for_the_same_words_area_history_and_prompt(change, verdict):
    pre = _done()
    turn = {"words": pre.words, "area": pre.area, "version": pre.version, "messages": list(MSGS), "kind": "answer",
            **change}
    assert reuse_verdict(pre, **turn) == verdict


def test_no_record_running_or_stopped_work_is_never_reused():
    assert reuse_verdict(None, "hi", None, 0, MSGS, "answer") == "none"
    running = Preempted("hi", None, 0, MSGS, "answer")
    assert reuse_verdict(running, "hi", None, 0, MSGS, "answer") == "still running"
    running.done.set()  # it ended without a kept generation: cancelled, or no clean cut
    assert reuse_verdict(running, "hi", None, 0, MSGS, "answer") == "stopped"
    call = Preempted("turn on the hall fan", None, 0, MSGS, "tool_call")
    call.done.set()  # a tool call's prompt is only evaluated: the KV cache is what is reused
    assert reuse_verdict(call, "turn on the hall fan", None, 0, MSGS, "tool_call") == REUSE
    call.stopped = True
    assert reuse_verdict(call, "turn on the hall fan", None, 0, MSGS, "tool_call") == "stopped"
    assert preempt_key("  hi there ") == "hi there"


def test_stop_the_user_going_on_or_a_turn_with_other_words_but_not_a_turn_with_the_same_words():
    brain = SimpleNamespace(_turns_begun=5, _turn_words=None)
    cancel, dropped = threading.Event(), threading.Event()
    stop = PreemptStop(brain, 5, cancel, words=("why?", ""), dropped=dropped)
    assert not stop.is_set()
    brain._turns_begun, brain._turn_words = 6, ("why?", "")  # the turn of these words: it waits for the work
    assert not stop.is_set()
    brain._turns_begun, brain._turn_words = 7, ("why not?", "")  # then another turn: stop
    assert stop.is_set()
    brain._turn_words = ("why?", "")
    dropped.set()  # the turn did not want it after all
    assert stop.is_set()
    idle = PreemptStop(brain, 7, None)  # the idle prefill: any turn stops it
    assert not idle.is_set()
    brain._turns_begun = 8
    assert idle.is_set()
    stop2 = PreemptStop(brain, 8, cancel, words=("why?", ""))
    cancel.set()  # the speculation was superseded: the user went on
    assert stop2.is_set()


# ----------------------------------------------------------------------------------------------- brain flow


class PregenBackend(ScriptedBackend):
    """A scripted backend with the optional preemption calls. ``pregenerate`` returns a token object (or None when
    its cancel is set; while ``hold`` is set it waits for the cancel, 10 s at most, as a long generation would);
    ``stream`` records the ``resume`` it was given."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.pregenerated: list[list[dict]] = []
        self.tool_prefilled: list[list[dict]] = []
        self.resumed: list[object] = []
        self.hold = 0.0  # seconds pregenerate runs (unless cancelled first)
        self.pregen_started = threading.Event()
        self.pregen_stopped = threading.Event()
        self.pregen_ended = threading.Event()
        self.t_pregen_end = 0.0

    def pregenerate(self, messages, *, max_tokens, enough=None, cancel=None):
        self.pregenerated.append([dict(m) for m in messages])
        self.pregen_started.set()
        try:
            end = time.monotonic() + self.hold
            while time.monotonic() < end:
                if cancel is not None and cancel.is_set():
                    self.pregen_stopped.set()
                    return None
                time.sleep(0.005)
            if cancel is not None and cancel.is_set():
                self.pregen_stopped.set()
                return None
            return SimpleNamespace(tokens=[1, 2, 3], text="The sky", stopped="paused",
                                   stats=CallStats(n_prompt=120, n_cached=100, n_gen=3))
        finally:
            self.t_pregen_end = time.monotonic()
            self.pregen_ended.set()

    def prefill_tool_call(self, messages, cancel=None):
        self.tool_prefilled.append([dict(m) for m in messages])
        return CallStats(n_prompt=130, n_cached=100)

    def prefill(self, messages, cancel=None):
        return CallStats(n_prompt=100, n_cached=100)

    def stream(self, messages, *, resume=None, **kw):
        self.resumed.append(resume)
        self.t_stream = time.monotonic()
        return super().stream(messages, **kw)


@pytest.fixture()
def pregen(monkeypatch, tmp_path):
    home_file = tmp_path / "home.yaml"
    home_file.write_text(HOME_YAML)

    def build(streams=(), calls=()):
        backend = PregenBackend(streams, calls)
        monkeypatch.setitem(LLM_BACKENDS, "scripted", lambda settings: backend)
        s = Settings()
        s = dataclasses.replace(s, llm=dataclasses.replace(s.llm, backend="scripted", preempt=True))
        brain = Brain.from_settings(s, home_file=str(home_file))
        brain.warmup()
        return brain, backend

    return build


Q = "why is the sky blue?"


def test_same_words_reuse_the_preempted_tokens_and_nothing_leaks_before_the_turn(pregen):
    brain, backend = pregen(streams=[("words", "The sky is blue because of scattering.")])
    published = []
    brain.on_intent = lambda call, result: published.append(call)
    assert brain.preempt(Q) is True
    work = brain._preempted.work
    # nothing of it is anywhere yet: no history, no turn context, no intent, no pending question
    assert brain.conversation.messages() == [] and brain._turn_context == ("", "") and published == []
    assert brain._pending is None and backend.seen == []
    resp = brain.respond(Q)
    assert resp.wait() == "The sky is blue because of scattering."
    assert backend.resumed == [work] and resp.timings["preempt"] == REUSE
    assert backend.seen[0][1] == backend.pregenerated[0]  # the very prompt that was preempted
    assert brain._preempted is None  # one turn, one use
    assert brain.conversation.messages() == []  # the history only takes what the voice loop says was spoken


def test_other_words_discard_it_and_stop_it_at_the_next_token(pregen):
    brain, backend = pregen(streams=[("words", "Because of Rayleigh scattering.")])
    backend.hold = 10.0
    done = threading.Thread(target=brain.preempt, args=(Q,))
    done.start()
    assert backend.pregen_started.wait(5.0)
    t0 = time.monotonic()
    resp = brain.respond("why is the sky blue at noon?")  # the user went on: the final transcript differs
    assert resp.wait() == "Because of Rayleigh scattering."
    assert backend.pregen_stopped.wait(5.0) and time.monotonic() - t0 < 2.0
    done.join(5.0)
    assert backend.resumed == [None] and resp.timings["preempt"] == "words changed"


def test_the_speculations_cancel_stops_it_and_nothing_is_kept(pregen):
    brain, backend = pregen(streams=[("words", "Blue light scatters more.")])
    backend.hold = 10.0
    gone = threading.Event()
    t = threading.Thread(target=brain.preempt, args=(Q,), kwargs={"cancel": gone})
    t.start()
    assert backend.pregen_started.wait(5.0)
    gone.set()  # speech resumed: the speculation (and its preemption) is superseded
    assert backend.pregen_stopped.wait(2.0)
    t.join(2.0)
    resp = brain.respond(Q)
    assert resp.wait() == "Blue light scatters more."
    assert backend.resumed == [None] and resp.timings["preempt"] == "stopped"


def test_a_turn_with_the_same_words_waits_for_the_running_preemption_instead_of_starting_again(pregen):
    brain, backend = pregen(streams=[("words", "The sky is blue.")])
    backend.hold = 0.3
    t = threading.Thread(target=brain.preempt, args=(Q,))
    t.start()
    assert backend.pregen_started.wait(5.0)
    resp = brain.respond(Q)  # the endpoint came while the first tokens were still being generated
    assert resp.wait() == "The sky is blue."
    t.join(2.0)
    assert not backend.pregen_stopped.is_set()  # not cancelled: it was the turn's own work
    assert backend.t_stream >= backend.t_pregen_end  # the turn's call came after it, and took it over
    assert resp.timings["preempt"] == REUSE and backend.resumed[0] is not None
    assert 0 < resp.timings["preempt_wait_s"] < 2.0


def test_a_history_change_in_between_discards_it(pregen):
    brain, backend = pregen(streams=[("words", "Blue.")])
    assert brain.preempt(Q) is True
    brain.commit_turn("what time is it?", "It is noon.")  # the previous turn was committed after the pause
    resp = brain.respond(Q)
    assert resp.wait() == "Blue."
    assert backend.resumed == [None] and resp.timings["preempt"] == "history changed"


def test_fast_path_commands_get_nothing_and_an_llm_command_only_its_tool_call_prompt(pregen):
    brain, backend = pregen(calls=[{"name": "HassTurnOn", "arguments": {"name": "Kitchen Light"}}])
    published = []
    brain.on_intent = lambda call, result: published.append(call)
    assert brain.preempt("turn on the kitchen light") is False  # the fast path answers it
    assert backend.pregenerated == [] and backend.tool_prefilled == []
    words = "could you please maybe switch the kitchen light on for me"
    if brain.matcher.match(words, None, ask_back=True) is not None:
        pytest.skip("the tolerant tier took these words")
    assert brain.preempt(words) is True
    assert backend.pregenerated == []  # a device command: the prompt of its call, nothing generated
    assert backend.tool_prefilled[0][-1] == {"role": "assistant", "content": ""}
    assert published == [] and backend.calls  # no call was written or run at the pause
    resp = brain.respond(words)
    resp.wait()
    assert resp.timings["preempt"] == REUSE and backend.seen[0][0] == "json"
    assert backend.seen[0][1] == backend.tool_prefilled[0]  # the call's prompt is what was evaluated
    assert [c.name for c in published] == ["HassTurnOn"]  # published once, by the turn


# ----------------------------------------------------------------------------------------------- real model

SYSTEM = "You are a concise voice assistant in a home. Answer in one or two short spoken sentences."
QUESTION = "tell me three facts about the moon"


@pytest.fixture(scope="module")
def real(store, tmp_path_factory):
    """The real model at temperature 0 (greedy: a reply can be compared token for token) behind a Brain with a
    short fixed prefix (the prefix is not what is tested; a short one keeps the test fast)."""
    from edge_agent.handlers import IntentHandler
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher
    from edge_agent.timers import TimerManager

    home_file = tmp_path_factory.mktemp("home") / "home.yaml"
    home_file.write_text(HOME_YAML)
    s = Settings()
    s = dataclasses.replace(s, llm=dataclasses.replace(s.llm, threads=1, temperature=0.0, max_tokens=24,
                                                       preempt=True))
    m = Llm(require_model(store, "qwen2_5_coder_0_5b"), LlmSettings(threads=1, temperature=0.0, max_tokens=24))
    backend = LocalLlamaBackend(m)
    home = Home.load(s.home, file=str(home_file))
    timers = TimerManager()
    brain = Brain(s, home, IntentHandler(home, s.home, timers), IntentMatcher(home), backend, timers=timers)
    brain.prefix = SYSTEM
    brain.warmup()
    yield brain
    m.close()


def test_real_model_reuses_a_preempted_reply_and_drops_it_for_other_words(real):
    brain = real
    plain = brain.respond(QUESTION)
    base = plain.wait()
    base_call = plain.timings["llm_calls"][0]
    assert "preempt" not in plain.timings and base_call["n_gen"] > 8, base_call
    assert brain.preempt(QUESTION) is True
    work = brain._preempted.work
    assert 0 < len(work.tokens) <= 16 and work.text and work.text.strip() in base
    resp = brain.respond(QUESTION)
    again = resp.wait()
    call = resp.timings["llm_calls"][0]
    print(f"\nplain: {base_call}\npreempted ({len(work.tokens)} tokens, {work.stopped}: {work.text!r}): {call}")
    assert resp.timings["preempt"] == REUSE
    assert again == base  # greedy: the same reply, its start generated at the pause
    assert call["n_preempted"] == len(work.tokens)
    assert call["n_gen"] < base_call["n_gen"]  # fewer tokens generated after the final transcript
    if work.stopped == "paused":  # generation went on from the cache: the prompt was not evaluated again
        assert call["n_gen"] + len(work.tokens) == base_call["n_gen"]
        assert call["n_cached"] == call["n_prompt"]
    # the user went on: the final transcript differs, the preempted tokens are thrown away
    assert brain.preempt(QUESTION) is True
    stop = threading.Event()
    other = brain.respond(QUESTION + " please", cancel=stop)
    for _ in other:  # its first piece is enough to see which tokens it began with
        stop.set()
    assert other.timings["preempt"] == "words changed" and "n_preempted" not in other.timings["llm_calls"][0]
    assert brain.conversation.messages() == []  # nothing reached the history without the voice loop's commit


def test_real_model_a_cancelled_preemption_keeps_nothing_and_a_foreign_one_is_ignored(real):
    backend = real.llm
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "name a colour"}]
    gone = threading.Event()
    gone.set()  # the user went on before it started
    assert backend.pregenerate(msgs, max_tokens=8, cancel=gone) is None
    work = backend.pregenerate(msgs, max_tokens=3)
    assert work is not None and work.stopped == "paused" and len(work.tokens) == 3
    other = [*msgs[:1], {"role": "user", "content": "name a fruit"}]
    with backend.stream(other, max_tokens=4, resume=work) as s:  # other words: generated from their own prompt
        text = "".join(s)
    assert s.stats.n_preempted == 0 and not text.startswith(work.text)
