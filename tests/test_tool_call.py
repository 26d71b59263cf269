"""A tool call written as a few choices (``llm_choice``, ``tool_choice``): the decoder's rules with a scripted model
(pure logic: what it may write, when it asks the model, what it never evaluates), then the real model (Qwen2.5-Coder
0.5B) in process: the same call as the grammar writes, a fast-path-missing command that becomes the right intent
through the LLM, and a request naming no device that touches none.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import numpy as np
import pytest

from edge_agent.config import LlmSettings, Settings
from edge_agent.errors import LlmError
from edge_agent.llm_choice import ChoiceDecoder
from edge_agent.llm_prompt import parse_json_output
from edge_agent.llm_tools import select_tools, tool_call_schema
from edge_agent.tool_choice import CALL_START, tool_plan, write_tool_call

from .conftest import require_model

# ----------------------------------------------------------------------------------------- a scripted model

PIECES = [bytes([b]) for b in range(32, 127)] + [
    b"Kitchen", b" Light", b" Lamp", b"Living", b" Room", b" Bl", b"inds", b'",', b' "', b'":', b' {"', b"name",
    b"area", b"arguments", b"H", b"ass", b"Turn", b"On", b"Off", b"Light", b"Set", b"}}", b'"}}', b"brightness",
    b"domain", b"light", b"Front", b" Door"]


class ScriptedModel:
    """A model that wants to write ``want`` after the prompt: a token that continues it scores by its length, any
    other token scores by ``others`` (higher than the right ones when a test says so). Tokenizes greedily, longest
    piece first. Records every evaluation."""

    def __init__(self, want: bytes, others: dict[bytes, float] | None = None) -> None:
        self.vocab = list(dict.fromkeys(PIECES))
        self.ids = {p: i for i, p in enumerate(self.vocab)}
        self.want = want
        self.others = others or {}
        self.written = b""
        self.evaluations: list[list[bytes]] = []

    def logits(self) -> np.ndarray:
        out = np.full(len(self.vocab), -100.0)
        for i, p in enumerate(self.vocab):
            if self.want.startswith(self.written + p):
                out[i] = len(p)
            elif p in self.others:
                out[i] = self.others[p]
        return out

    def advance(self, tokens):
        self.evaluations.append([self.vocab[t] for t in tokens])
        self.written += b"".join(self.vocab[t] for t in tokens)
        return self.logits()

    def tokenize(self, data: bytes) -> list[int]:
        out, i = [], 0
        while i < len(data):
            p = max((p for p in self.vocab if data.startswith(p, i)), key=len)
            out.append(self.ids[p])
            i += len(p)
        return out

    def piece(self, token: int) -> bytes:
        return self.vocab[token]

    def token_of(self, data: bytes) -> int | None:
        return self.ids.get(data)


def decoder(model: ScriptedModel, **kw) -> ChoiceDecoder:
    return ChoiceDecoder(model, model.logits(), **kw)


NAMES = [b'Kitchen Light"', b'Living Room Lamp"', b'Living Room Blinds"', b'Front Door"']


def test_the_model_picks_among_the_candidates_only_where_they_differ():
    m = ScriptedModel(b'Living Room Blinds", "x"')
    dec = decoder(m)
    assert dec.choose(NAMES) == b'Living Room Blinds"'
    # "Living" (a choice among Kitchen/Living/Front), " Room" forced, " Bl" (Lamp or Blinds): two decisions;
    # "inds" and the quote are known once only Blinds is left: never evaluated, nothing asked
    assert dec.stats.decisions == 2
    assert m.evaluations == [[b"Living", b" Room"]]
    assert m.written == b"Living Room"


def test_the_prompts_last_tokens_go_with_the_first_choice():
    # "Hass" begins every tool name: it is evaluated in one batch with the end of the prompt, not in a step of its own
    m = ScriptedModel(b'{"name": "HassTurnOff"')
    prompt_tail = m.tokenize(b'{"name": "')
    dec = ChoiceDecoder(m, None, pending=prompt_tail)
    assert dec.choose([b'HassTurnOn"', b'HassTurnOff"', b'HassLightSet"']) == b'HassTurnOff"'
    assert m.evaluations == [[m.piece(t) for t in prompt_tail] + [b"H", b"ass"], [b"Turn"]]
    assert dec.stats.decisions == 2


def test_whatever_the_model_prefers_the_result_is_a_candidate():
    # the model wants a device that is not configured, and rates "G" above every configured name
    m = ScriptedModel(b'Garage Door"', others={b"G": 50.0, b"K": 1.0})
    dec = decoder(m)
    assert dec.choose(NAMES) == b'Kitchen Light"'


def test_forced_text_is_tokenized_with_what_follows_it():
    # after a name its rest and quote are forced; the next choice (another argument or the end) may then take the
    # model's own '",' token, as the grammar let it, instead of a lone '"' then ','
    m = ScriptedModel(b'Front Door", "brightness": 3}}')
    dec = decoder(m)
    assert dec.choose(NAMES) == b'Front Door"'
    assert dec.choose([b', "brightness": ', b"}}"]) == b', "brightness": '
    assert dec.number(0, 100, decimal=False, ends=[b"}}"]) == ("3", b"}}")
    assert m.evaluations == [[b"Front", b" Door"], [b'",', b' "', b"brightness", b'":', b" "], [b"3"]]
    assert dec.stats.decisions == 4  # Front, '",', 3, and the end (3 could have gone on to 30)


def test_a_number_stays_in_its_range_and_stops_where_it_must():
    m = ScriptedModel(b"30}}")
    dec = decoder(m)
    assert dec.number(0, 100, decimal=False, ends=[b"}}", b","]) == ("30", b"}}")
    m = ScriptedModel(b"250}}")  # out of range: 25 is as far as it can go
    assert decoder(m).number(0, 100, decimal=False, ends=[b"}}"]) == ("25", b"}}")
    m = ScriptedModel(b"100,")  # 100 cannot go on: its end is the only choice left
    dec = decoder(m)
    assert dec.number(0, 100, decimal=False, ends=[b"}}", b","]) == ("100", b",")
    m = ScriptedModel(b"21.5}}")
    assert decoder(m).number(5, 35, decimal=True, ends=[b"}}"]) == ("21.5", b"}}")
    m = ScriptedModel(b"21.5}}")
    assert decoder(m).number(5, 35, decimal=False, ends=[b"}}"]) == ("21", b"}}")


def test_candidates_that_prefix_each_other_are_refused():
    with pytest.raises(LlmError):
        decoder(ScriptedModel(b"")).choose([b"Kitchen", b"Kitchen Light"])


def test_a_cancel_stops_before_the_next_model_step():
    m = ScriptedModel(b'Living Room Blinds"')
    stop = threading.Event()

    def check():
        if stop.is_set():
            raise LlmError("cancelled")

    dec = decoder(m, check=check)
    stop.set()
    with pytest.raises(LlmError):
        dec.choose(NAMES)
    assert m.evaluations == []


# ------------------------------------------------------------------------------------- the tool-call program

HOME_YAML = """
areas:
  - {id: kitchen, name: Kitchen}
  - {id: living_room, name: Living Room}
entities:
  - {id: light.kitchen, name: Kitchen Light, area: kitchen}
  - {id: light.living_room_lamp, name: Living Room Lamp, area: living_room}
  - {id: cover.living_room_blinds, name: Living Room Blinds, area: living_room}
  - {id: lock.front_door, name: Front Door, area: kitchen}
"""


@pytest.fixture(scope="module")
def home_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("home") / "home.yaml"
    p.write_text(HOME_YAML)
    return p


@pytest.fixture(scope="module")
def schema(home_file):
    from edge_agent.home import Home
    from edge_agent.llm_tools import tool_specs

    home = Home.load(Settings().home, file=home_file)
    return tool_call_schema(select_tools(tool_specs(home), home))


def _write(schema, want: str, **others: float) -> tuple[str, ScriptedModel]:
    m = ScriptedModel(want[len(CALL_START):].encode(), {k.encode(): v for k, v in others.items()})
    text = write_tool_call(decoder(m), tool_plan(schema))
    return text, m


def test_the_call_is_the_json_the_grammar_allowed(schema):
    want = '{"name": "HassTurnOff", "arguments": {"name": "Living Room Blinds"}}'
    text, m = _write(schema, want)
    assert text == want
    assert parse_json_output(text, schema) == json.loads(want)
    want = '{"name": "HassLightSet", "arguments": {"name": "Kitchen Light", "brightness": 30}}'
    text, _ = _write(schema, want)
    assert text == want and parse_json_output(text, schema)["arguments"]["brightness"] == 30


def test_a_number_the_words_state_costs_no_model_step(schema):
    """"... like thirty percent": once the model has chosen the brightness, 30 is written without a step (a digit
    is a model step of ~0.1 s here); only the end (close, or another argument) is still the model's. A number out
    of the argument's range, or none said, is the model's to write."""
    from edge_agent.tool_choice import said_values

    want = '{"name": "HassLightSet", "arguments": {"name": "Kitchen Light", "brightness": 30}}'
    plain, m0 = _write(schema, want)
    m1 = ScriptedModel(want[len(CALL_START):].encode())
    said = said_values("Make the kitchen light a bit dimmer, like thirty percent.")
    assert said["brightness"] == 30
    assert write_tool_call(decoder(m1), tool_plan(schema), said) == plain == want
    assert len(m1.evaluations) < len(m0.evaluations), (m0.evaluations, m1.evaluations)
    # the model would write 45: the words said 30
    m2 = ScriptedModel(want.replace("30", "45")[len(CALL_START):].encode())
    assert json.loads(write_tool_call(decoder(m2), tool_plan(schema), said))["arguments"]["brightness"] == 30
    # out of range (brightness is 0..100): the number written by the model (its argument still the words')
    m3 = ScriptedModel(want[len(CALL_START):].encode())
    assert write_tool_call(decoder(m3), tool_plan(schema), {"brightness": 150}) == want
    assert b"3" in [e[-1] for e in m3.evaluations]  # the model's digit, a step of its own


def test_what_the_words_settle_costs_no_model_step(schema, home_file):
    """A device the words name alone (the narrowed schema leaves one name) is written without choosing it; after
    it, a number they state for the tool; and once both are in and the words name no other argument's value, the
    call closes without a step (the forced text after the tool's name is then never evaluated). A colour said, or a
    number still the model's, keeps the choice."""
    from edge_agent.home import Home
    from edge_agent.llm_tools import narrowed_call_schema
    from edge_agent.tool_choice import said_values
    from edge_agent.tool_fit import named_targets

    home = Home.load(Settings().home, file=home_file)
    words = "The living room lamp should be at about forty percent."
    assert "Living Room Lamp" in named_targets(words, home)["name"]
    plan = tool_plan(narrowed_call_schema(schema, {"name": {"Living Room Lamp"}}))  # the words' one light
    want = '{"name": "HassLightSet", "arguments": {"name": "Living Room Lamp", "brightness": 40}}'
    m = ScriptedModel(want[len(CALL_START):].encode())
    assert write_tool_call(decoder(m), plan, said_values(words), words) == want
    assert m.evaluations == [[b"H", b"ass"]], m.evaluations  # one step, the tool: nothing after it evaluated
    # without the number in the words: the model writes it, and chooses to close
    m = ScriptedModel(want[len(CALL_START):].encode())
    assert write_tool_call(decoder(m), plan, {}, "make the living room lamp dimmer") == want
    assert len(m.evaluations) > 3
    # a colour in the words: the model may still add it
    red = '{"name": "HassLightSet", "arguments": {"name": "Living Room Lamp", "brightness": 40, "color": "red"}}'
    m = ScriptedModel(red[len(CALL_START):].encode())
    assert write_tool_call(decoder(m), plan, {"brightness": 40}, "the living room lamp red at forty percent") == red


def test_a_timers_length_is_written_in_the_units_said(schema):
    """The LLM eval: "set a timer for 45 seconds" was written {"minutes": 45}, "for two hours" {"hours": 2,
    "minutes": 0, "seconds": 0}. Where the words give a length in some units, only those are offered."""
    from edge_agent.tool_choice import said_values

    wrong = '{"name": "HassStartTimer", "arguments": {"minutes": 45}}'
    m = ScriptedModel(wrong[len(CALL_START):].encode())
    text = write_tool_call(decoder(m), tool_plan(schema), said_values("set a timer for 45 seconds"))
    assert json.loads(text)["arguments"] == {"seconds": 45}, text
    padded = '{"name": "HassStartTimer", "arguments": {"hours": 2, "minutes": 0, "seconds": 0}}'
    m = ScriptedModel(padded[len(CALL_START):].encode())
    text = write_tool_call(decoder(m), tool_plan(schema), said_values("set a timer for two hours"))
    assert json.loads(text)["arguments"] == {"hours": 2}, text
    # nothing said in units of time: every unit is the model's to choose, as before
    m = ScriptedModel(wrong[len(CALL_START):].encode())
    assert write_tool_call(decoder(m), tool_plan(schema), said_values("a timer please")) == wrong


def test_numbers_said_with_their_unit_only():
    from edge_agent.tool_choice import said_values

    assert said_values("The living room lamp should be at about forty percent.")["brightness"] == 40
    assert said_values("dim it to 40%")["position"] == 40
    assert said_values("set a timer for 5 minutes") == {"minutes": 5}
    assert said_values("set a timer for one hour") == {"hours": 1}
    assert said_values("Set the thermostat to 21 degrees, please.") == {"temperature": 21}
    # a decimal, two numbers for one unit, or a number without a unit: the model's
    assert said_values("set the heat to 21.5 degrees") == {} and said_values("twenty one point five degrees") == {}
    assert said_values("a timer for 5 minutes and one for 10 minutes") == {}
    assert said_values("set lamp 2 to half brightness") == {}


def test_a_device_tool_always_gets_a_target(schema):
    # the model would close the arguments at once ({} fits every shape and names no device, so every device
    # would match it): a target is chosen instead
    text, _ = _write(schema, '{"name": "HassTurnOn", "arguments": {}}', **{"}}": 90.0})
    args = parse_json_output(text, schema)["arguments"]
    assert args and set(args) & {"name", "area", "domain", "floor"}


def test_a_tool_without_arguments_costs_no_step_after_its_name(schema):
    text, m = _write(schema, '{"name": "HassGetCurrentTime", "arguments": {}}')
    assert text == '{"name": "HassGetCurrentTime", "arguments": {}}'
    assert all(b"arguments" not in b"".join(e) for e in m.evaluations)  # nothing after the name was evaluated


def test_free_text_arguments_are_not_offered(schema):
    plan = tool_plan(schema)
    assert "HassStartTimer" in plan.tools and all("name" not in s.props for s in plan.tools["HassStartTimer"])
    # a timer by its name needs free text: only the shape by area remains
    assert all("name" not in s.props for s in plan.tools["HassCancelTimer"])
    assert tool_plan({"type": "object"}) is None


def test_the_words_narrow_the_targets_the_call_may_name(home_file, schema):
    from edge_agent.home import Home
    from edge_agent.llm_tools import narrowed_call_schema
    from edge_agent.tool_fit import named_targets

    home = Home.load(Settings().home, file=home_file)
    # an area names its devices too; a device named by most of its name; nothing named: nothing narrowed
    assert named_targets("it's too dark in the kitchen", home) == {
        "name": {"Kitchen Light", "Front Door"}, "area": {"Kitchen"}, "floor": set()}
    assert named_targets("shut the living room blinds", home)["name"] == {"Living Room Lamp", "Living Room Blinds"}
    assert named_targets("turn it off", home) == {}
    narrow = narrowed_call_schema(schema, named_targets("close the blinds in the living room", home))
    assert narrowed_call_schema(schema, {}) is schema
    off = next(b for b in narrow["anyOf"] if b["properties"]["name"]["const"] == "HassTurnOff")
    by_name, by_target = off["properties"]["arguments"]["anyOf"]
    assert by_name["properties"]["name"]["enum"] == ["Living Room Blinds", "Living Room Lamp"]
    assert by_target["properties"]["area"]["enum"] == ["Living Room"]
    # a call on a device the words do not name no longer fits, one on a named device still does
    with pytest.raises(LlmError):
        parse_json_output('{"name": "HassTurnOff", "arguments": {"name": "Kitchen Light"}}', narrow)
    assert parse_json_output('{"name": "HassTurnOff", "arguments": {"name": "Living Room Blinds"}}', narrow)
    # the words name only an area: the shape by name is gone, the one by area remains
    office = narrowed_call_schema(schema, {"name": set(), "area": {"Kitchen"}, "floor": set()})
    on = next(b for b in office["anyOf"] if b["properties"]["name"]["const"] == "HassTurnOn")
    shapes = on["properties"]["arguments"]["anyOf"]
    assert len(shapes) == 1 and shapes[0]["properties"]["area"]["enum"] == ["Kitchen"]
    assert tool_plan(office) is not None


def test_the_brain_offers_the_call_only_what_the_words_name(monkeypatch, home_file):
    from edge_agent.brain import Brain
    from edge_agent.llm_backend import LLM_BACKENDS

    from .test_brain import ScriptedBackend

    class Recording(ScriptedBackend):
        def complete_json(self, messages, schema, **kw):
            self.schemas.append(schema)
            return super().complete_json(messages, schema, **kw)

    backend = Recording([], [{"name": "HassTurnOff", "arguments": {"name": "Living Room Blinds"}},
                             {"name": "HassTurnOff", "arguments": {"name": "Kitchen Light"}}])
    backend.schemas = []
    monkeypatch.setitem(LLM_BACKENDS, "scripted", lambda settings: backend)
    s = Settings()
    s = dataclasses.replace(s, llm=dataclasses.replace(s.llm, backend="scripted"))
    brain = Brain.from_settings(s, home_file=str(home_file))
    brain.fast_path = False
    resp = brain.respond("close the blinds in the living room")
    resp.wait()
    assert [c.entities for c in resp.intents] == [["cover.living_room_blinds"]]
    names = {n for b in backend.schemas[0]["anyOf"] for sh in b["properties"]["arguments"].get("anyOf", [])
             for n in sh["properties"].get("name", {}).get("enum", [])}
    assert names == {"Living Room Blinds", "Living Room Lamp"}  # the kitchen light could not have been named
    resp = brain.respond("turn it off")  # a reference names nothing: the whole home is offered (the context says)
    resp.wait()
    assert backend.schemas[1] is brain.tool_schema


# ------------------------------------------------------------------------------------------ the real model

LLM_THREADS = 1


@pytest.fixture(scope="module")
def backend(store, tmp_path_factory):
    from edge_agent.llm import Llm, LocalLlamaBackend

    m = Llm(require_model(store, "qwen2_5_coder_0_5b"), LlmSettings(threads=LLM_THREADS),
            cache_dir=tmp_path_factory.mktemp("prefix"))
    m.load()
    yield LocalLlamaBackend(m)
    m.close()


@pytest.fixture(scope="module")
def brain_for(backend, home_file):
    from edge_agent.brain import Brain
    from edge_agent.handlers import IntentHandler
    from edge_agent.home import Home
    from edge_agent.intents import IntentMatcher
    from edge_agent.timers import TimerManager

    s = Settings(llm=LlmSettings(threads=LLM_THREADS, reply_after_tool=False))
    home = Home.load(s.home, file=home_file)
    matcher = IntentMatcher(home)

    def make():
        timers = TimerManager()
        b = Brain(s, home, IntentHandler(home, s.home, timers), matcher, backend, timers=timers)
        b.warmup()
        return b

    return make


def test_choices_write_the_call_the_grammar_writes_in_a_few_steps(brain_for, backend):
    brain = brain_for()
    messages = [*brain._messages("bring the living room lamp down to 40 percent", None, record=False),
                {"role": "assistant", "content": ""}]
    backend.choice_tool_calls = False
    try:
        t0 = time.monotonic()
        by_grammar, g = backend.complete_json(messages, brain.tool_schema, tool_call=True, max_tokens=120)
        t_grammar = time.monotonic() - t0
    finally:
        backend.choice_tool_calls = True
    t0 = time.monotonic()
    by_choice, c = backend.complete_json(messages, brain.tool_schema, tool_call=True, max_tokens=120)
    t_choice = time.monotonic() - t0
    print(f"\ngrammar {t_grammar:.2f} s, {g.n_gen} tokens; choices {t_choice:.2f} s, {c.n_gen} decisions: {c.text}")
    assert by_choice == by_grammar and c.text == g.text
    assert c.n_gen * 2 < g.n_gen  # most tokens were forced, not sampled


@pytest.mark.parametrize("text, forced, want", [
    # straight to the tool call
    ("could you make the kitchen light a bit dimmer, say 25 percent", True, ("light.kitchen", 25)),
    # the free decision begins the call
    ("the living room lamp should be at 40 percent brightness", False, ("light.living_room_lamp", 40)),
])
def test_a_command_the_fast_path_misses_becomes_the_right_intent_through_the_llm(brain_for, text, forced, want):
    brain = brain_for()
    assert brain.matcher.match(text, None, ask_back=True) is None and brain.context.resolve(text) is None
    published = []
    brain.on_intent = lambda call, result: published.append(call)
    resp = brain.respond(text)
    reply = resp.wait()
    calls = resp.timings["llm_calls"]
    print(f"\nreply: {reply!r} calls: {json.dumps(calls)}")
    assert resp.used_llm and resp.timings["forced_tool_call"] is forced
    assert [(c.name, c.entities, c.slots.get("brightness")) for c in published] == [
        ("HassLightSet", [want[0]], want[1])]
    tool = [c for c in calls if c["phase"] == "tool_call"]
    assert tool and tool[-1]["n_gen"] <= 10  # decisions, not the ~27 tokens of the JSON


def test_mentions_device_does_not_take_the_verb_switch_for_a_device(home_file):
    from edge_agent.home import Home
    from edge_agent.tool_fit import looks_like_command, mentions_device

    home = Home.load(Settings().home, file=home_file)
    assert not mentions_device("switch to something happier and tell me a short joke", home)
    assert not looks_like_command("switch to something happier and tell me a short joke", home)
    assert mentions_device("turn off the kitchen switch", home) and mentions_device("flip the switch", home)
    assert looks_like_command("switch the living room lamp on", home)


def test_a_request_naming_no_device_touches_none(brain_for):
    """It once turned on a lamp: "switch" (the verb) counted as naming a device, and the call was forced."""
    brain = brain_for()
    before = dict(brain.handler.state)
    published = []
    brain.on_intent = lambda call, result: published.append(call)
    resp = brain.respond("switch to something happier and tell me a short joke")
    reply = resp.wait()
    print(f"\nreply: {reply!r} timings: {json.dumps(resp.timings)}")
    assert resp.used_llm and published == [] and resp.intents == [] and resp.pending is None
    assert brain.handler.state == before


def test_a_cancelled_tool_call_raises_at_once(brain_for, backend):
    brain = brain_for()
    messages = [*brain._messages("set the kitchen light to 10 percent", None, record=False),
                {"role": "assistant", "content": ""}]
    cancel = threading.Event()
    cancel.set()
    t0 = time.monotonic()
    with pytest.raises(LlmError):
        backend.complete_json(messages, brain.tool_schema, tool_call=True, cancel=cancel)
    assert time.monotonic() - t0 < 1.0


def test_between_turns_the_context_line_is_evaluated_with_the_history(brain_for, backend):
    brain = brain_for()
    said = "turn on the kitchen light"
    brain.commit_turn(said, brain.respond(said).wait())  # a fast-path turn: the kitchen light is now "it"
    t0 = time.monotonic()
    while brain.idle_prefill_stats is None and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    context = brain._context(None)
    assert "Kitchen Light" in context and backend.count_tokens(context) >= 20
    text = "could you make the kitchen light a bit dimmer, say 25 percent"
    prefilled = brain._next_prompt_start()
    assert prefilled[-1] == {"role": "system", "content": context}
    assert brain._messages(text, None, record=False)[:len(prefilled)] == prefilled
    resp = brain.respond(text)
    resp.wait()
    call = resp.timings["llm_calls"][0]
    uncached = call["n_prompt"] - call["n_cached"]
    # only the user's words and the call's start: the ~30 tokens of the context line were evaluated in the pause
    assert uncached <= backend.count_tokens(text) + 14, call
