"""The LLM wrapper: pure helpers with plain values, then the real Qwen2.5-Coder-0.5B model (loaded once).

What must hold on a Pi: the fixed prompt prefix is evaluated once (KV-cache reuse, measured), a cancel stops
generation within a token or two, a timeout raises ``LlmError`` (never hangs), and constrained JSON is parsed and
validated (bad output is an ``LlmError`` naming the problem).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from edge_agent.config import LlmSettings
from edge_agent.errors import LlmError, ModelError
from edge_agent.llm import (
    Llm,
    LocalLlamaBackend,
    _find_stop,
    _partial_stop_len,
    parse_json_output,
    render_chatml,
    render_messages,
)
from edge_agent.llm_backend import LLM_BACKENDS, CallStats, LlmBackend, create_backend

from .conftest import ROOT, require_model

# ----------------------------------------------------------------------------------------------- pure helpers


def test_render_chatml_roles_and_tool_response():
    text = render_chatml([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                          {"role": "tool", "content": '{"ok": true}'}])
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                    '<|im_start|>user\n<tool_response>\n{"ok": true}\n</tool_response><|im_end|>\n'
                    "<|im_start|>assistant\n")


def test_render_messages_continues_a_begun_reply_and_repeats_a_call_verbatim():
    base = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    # a final assistant message is continued: the tool call is then written after "Sure, "
    assert render_messages([*base, {"role": "assistant", "content": "Sure, "}]).endswith(
        "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nSure, ")
    # a call in the history is what the model wrote after the tag, closed as Qwen closes it
    text = render_messages([*base, {"role": "assistant", "content": "", "tool_call": '{"name": "X"}'},
                            {"role": "tool", "content": "{}"}])
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "X"}\n</tool_call><|im_end|>\n<|im_start|>user\n'
            "<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n") in text
    assert render_messages(base) == render_chatml(base)


def test_registry_names_the_local_backend_and_rejects_unknown_ones(settings):
    from edge_agent.errors import ConfigError

    assert "local" in LLM_BACKENDS
    backend = create_backend(settings)
    assert isinstance(backend, LocalLlamaBackend) and isinstance(backend, LlmBackend)
    assert not backend.loaded  # nothing loads before it is used
    with pytest.raises(ConfigError) as e:
        create_backend(settings, "nope")
    assert "llm.backend" in e.value.message


def test_stop_string_helpers():
    stops = ("<|im_end|>", "<tool_call>")
    assert _find_stop("hello <tool_call>{", stops) == (6, "<tool_call>")
    assert _find_stop("hello", stops) is None
    assert _partial_stop_len("hello <tool", stops) == 5  # held back: might become <tool_call>
    assert _partial_stop_len("hello <|im", stops) == 4
    assert _partial_stop_len("hello", stops) == 0


SCHEMA = {"type": "object", "properties": {"color": {"enum": ["red", "green"]}}, "required": ["color"],
          "additionalProperties": False}


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"color": "red"', "not valid JSON"),
    ("[1, 2]", "not an object"),
    ('{"color": "blue"}', "at color"),
    ('{"colour": "red"}', "does not match the schema"),
])
def test_parse_json_output_names_the_problem(text, fragment):
    with pytest.raises(LlmError) as e:
        parse_json_output(text, SCHEMA)
    assert fragment in e.value.message
    assert e.value.code == "llm"


def test_parse_json_output_valid():
    assert parse_json_output('{"color": "green"}', SCHEMA) == {"color": "green"}


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError) as e:
        Llm(tmp_path / "nope.gguf", LlmSettings()).load()
    assert "does not exist" in e.value.message and "models fetch" in (e.value.fix or "")


# ----------------------------------------------------------------------------------------------- real model

# One thread: llama.cpp's threads spin-wait for each other, so on a 2-core machine shared with anything else two
# threads were measured ~10x slower (1.3 against 11.7 tokens/s); one thread keeps these tests' timings stable.
LLM_THREADS = 1

# A ~350-token fixed prefix, the size of a real system prompt with tools.
RULES = "\n".join(f"Rule {i}: when the user mentions the {w}, answer about the {w} briefly and politely."
                  for i, w in enumerate(["kitchen", "garden", "garage", "bedroom", "hallway", "attic", "cellar",
                                         "porch", "office", "bathroom", "balcony", "laundry", "pantry", "study",
                                         "nursery", "library"]))
SYSTEM = "You are a concise voice assistant. Answer in one short sentence.\n" + RULES


@pytest.fixture(scope="module")
def llm(store):
    path = require_model(store, "qwen2_5_coder_0_5b")
    m = Llm(path, LlmSettings(threads=LLM_THREADS, max_tokens=48, temperature=0.0))
    m.load()
    yield m
    m.close()


@pytest.fixture(scope="module")
def backend(llm):
    return LocalLlamaBackend(llm)


def _msgs(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]


def _complete(backend, messages, **kw):
    with backend.stream(messages, **kw) as s:
        text = "".join(s)
    return text, s.stats


def test_prefix_is_reused_from_the_kv_cache(backend):
    _, first = _complete(backend, _msgs("Name a colour."), max_tokens=2)
    # something else in between: a different conversation would share only the system prefix as well
    _, second = _complete(backend, _msgs("Name a fruit."), max_tokens=2)
    assert first is not second  # one stats object per call
    print(f"\nfirst: {first.to_json()}\nsecond: {second.to_json()}")
    assert first.n_prompt > 300
    # only the user turn is evaluated again: the ~350-token prefix comes from the cache
    assert second.n_cached >= first.n_prompt - 20
    assert second.n_evaluated <= 20
    assert second.t_prompt_s < first.t_prompt_s / 4, (first.t_prompt_s, second.t_prompt_s)
    # the time to first token follows
    assert second.t_first_token - second.t_start < (first.t_first_token - first.t_start) / 2


def test_stream_yields_fragments_and_stops_at_end_of_turn(backend):
    with backend.stream(_msgs("What is two plus two? Answer with the number only."), max_tokens=16) as s:
        frags = list(s)
    text = "".join(frags)
    assert "4" in text
    assert "<|im_end|>" not in text
    assert s.stats.stopped == "eos" and s.stats.text == text and not s.stats.tool_call


def test_free_mode_reports_a_tool_call_and_words_mode_cannot_make_one(backend):
    system = "You control devices only by calling a tool.\n\n" + LocalLlamaBackend.tools_prompt(
        "HassTurnOn(name*): turn a device on\nHassTurnOff(name*): turn a device off")
    msgs = [{"role": "system", "content": system},
            {"role": "user", "content": "Turn on the fan."},
            {"role": "assistant", "content": "", "tool_call": '{"name": "HassTurnOn", "arguments": {"name": "Fan"}}'},
            {"role": "user", "content": "Turn on the lamp."},
            {"role": "assistant", "content": "", "tool_call": '{"name": "HassTurnOn", "arguments": {"name": "Lamp"}}'},
            {"role": "user", "content": "Turn off the fan."}]
    text, free = _complete(backend, msgs, max_tokens=24, temperature=0.0)
    assert free.tool_call and free.stopped == "tool_call", (text, free)
    assert "<tool_call>" not in text and "{" not in text
    words, st = _complete(backend, msgs, mode="words", max_tokens=16, temperature=0.0)
    assert not st.tool_call and words.strip() and not set(words) & set("{}<>"), words


def test_cancel_stops_within_a_few_tokens(backend):
    cancel = threading.Event()
    n = 0
    with backend.stream(_msgs("Tell me a long story about a dragon."), max_tokens=200, cancel=cancel,
                        temperature=0.7) as s:
        for _ in s:
            n += 1
            if n == 3:
                cancel.set()
    st = s.stats
    assert st.stopped == "cancelled"
    assert st.n_gen <= 4, st.to_json()


def test_cancel_during_prompt_evaluation(backend):
    cancel = threading.Event()
    cancel.set()
    t0 = time.monotonic()
    text, st = _complete(backend, _msgs("An entirely new question that is not cached: " + "blue " * 100),
                         cancel=cancel)
    assert text == ""
    assert st.stopped == "cancelled"
    assert time.monotonic() - t0 < 1.0


def test_deadline_raises_llm_error(backend):
    # ~130 uncached tokens at ~80 tokens/s cannot be done in 0.3 s
    with pytest.raises(LlmError) as e:
        _complete(backend, _msgs("Fresh words to evaluate: " + "green apple " * 60), deadline=time.monotonic() + 0.3)
    assert e.value.code == "llm" and "timed out" in e.value.message
    assert "cached" in e.value.message and "evaluated in" in e.value.message and "waiting" in e.value.message


def test_a_call_that_waited_for_the_model_says_how_long(llm, backend):
    # another call holds the model when this one comes (a timer's command while the voice loop answers). The holder
    # is the test's own (``Llm._held``, as every call takes the model), released 0.3 s after this call is seen
    # waiting: a real reply as the holder ended by itself on a fast CPU ("Count from one to one hundred in words."
    # is answered "One hundred words.", 4 tokens) and the wait came out at 0.22-0.23 s
    from edge_agent.llm_model import GenStats

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with llm._held(GenStats()):
            holding.set()
            release.wait(30)

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(30), "the holder never took the model"
    got: list = []
    second = threading.Thread(target=lambda: got.append(_complete(backend, _msgs("Name a colour."), max_tokens=2)))
    second.start()
    deadline = time.monotonic() + 30
    while llm._waiting < 1 and second.is_alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert llm._waiting >= 1, "the second call never waited for the model"
    time.sleep(0.3)  # how long the holder keeps the model after the call began to wait
    release.set()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive() and got
    _, st = got[0]
    assert st.t_wait_s >= 0.3, st.to_json()
    assert st.to_json()["wait_s"] == round(st.t_wait_s, 3)


def test_an_idle_prefill_yields_to_any_call_that_wants_the_model(llm, backend):
    # tools/conversations.py: one model, a fresh Brain per conversation; the last brain's idle prefill is nobody's to
    # cancel, and once kept the next conversation's call waiting 45 s ("timed out evaluating the prompt")
    out = {}
    words = " ".join(f"word{k}" for k in range(300))  # ~1,300 tokens: over ten seconds of evaluation on any CPU here
    held = threading.Thread(target=lambda: out.update(stats=llm.prefill("History nobody will ask for: " + words)))
    held.start()
    deadline = time.monotonic() + 30
    while not llm._lock.locked() and held.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert llm._lock.locked(), "the prefill never took the model"
    text, st = _complete(backend, _msgs("Name a colour."), max_tokens=2)
    held.join(30)
    pre = out["stats"]
    assert pre.n_prompt > 1000 and pre.stopped == "yielded", pre.to_json()
    # it stopped at its next batch, far from the end: the whole prompt would need seconds at ~70-90 tokens/s
    assert pre.t_prompt_s < pre.n_prompt / 200, pre.to_json()
    assert text and st.stopped != "timeout"


def test_complete_json_follows_the_schema(backend):
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Berlin", "Rome"]},
                                               "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    out, st = backend.complete_json([{"role": "system", "content": "Reply in JSON."},
                                     {"role": "user", "content": "What is the capital of Italy?"}], schema)
    assert out["city"] == "Rome", out
    assert isinstance(st, CallStats) and '"Rome"' in st.text and st.n_gen > 0
    assert isinstance(out["country"], str)


def test_warmup_saves_and_restores_the_prefix(store, tmp_path):
    path = require_model(store, "qwen2_5_coder_0_5b")
    prefix = [{"role": "system", "content": SYSTEM}]
    a = LocalLlamaBackend(Llm(path, LlmSettings(threads=LLM_THREADS), cache_dir=tmp_path))
    first = a.warmup(prefix)
    a.close()
    assert first.n_evaluated == first.n_prompt > 300
    assert len(list(tmp_path.glob("prefix-*.state"))) == 1
    b = LocalLlamaBackend(Llm(path, LlmSettings(threads=LLM_THREADS, max_tokens=8, temperature=0.0),
                              cache_dir=tmp_path))
    second = b.warmup(prefix)
    assert second.n_evaluated == 0 and second.t_prompt_s < first.t_prompt_s / 4
    # the restored cache is really used: a request only evaluates its own tokens, and the model still makes sense
    text, st = _complete(b, _msgs("What is two plus two? Answer with the number only."))
    assert st.n_cached >= first.n_prompt - 4
    assert "4" in text
    b.close()


def test_idle_prefill_of_the_history_leaves_only_the_new_words_to_evaluate(backend):
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a colour."},
               {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Name another one."},
               {"role": "assistant", "content": "Green."}]
    _complete(backend, _msgs("Name a fruit."), max_tokens=2)  # the cache now ends in another conversation
    cancelled = threading.Event()
    cancelled.set()
    stopped = backend.prefill(history, cancel=cancelled)  # a turn already waiting: nothing is evaluated
    assert stopped.stopped == "cancelled"
    idle = backend.prefill(history)
    assert idle.n_evaluated > 10 and idle.n_cached > 300  # the system prefix was cached, the history was not
    _, stats = _complete(backend, [*history, {"role": "user", "content": "And a third?"}], max_tokens=2)
    assert stats.n_cached >= idle.n_prompt - 1, (idle.to_json(), stats.to_json())
    assert stats.n_evaluated <= 15, stats.to_json()


# A daemon thread inside llama.cpp while the interpreter exits (the idle prefill after the last turn, a SIGTERM
# mid-turn): freeing the model under it crashed the process with SIGSEGV (two CI runs, exit -11). The exit waits for
# the batch in flight instead; the delays put the exit at different points of the evaluation.
EXIT_DURING_PREFILL = """
import sys, threading, time
from edge_agent.config import LlmSettings
from edge_agent.llm import Llm
m = Llm(sys.argv[1], LlmSettings(threads=1, max_tokens=8))
m.load()
text = "<|im_start|>system\\n" + " ".join(f"word{i}" for i in range(1500)) + "<|im_end|>\\n"
started = threading.Event()
def run():
    started.set()
    m.prefill(text)
threading.Thread(target=run, daemon=True).start()
started.wait(10)
time.sleep(float(sys.argv[2]))
print("exiting", flush=True)
"""


def test_exit_while_a_thread_is_inside_llama_cpp_does_not_crash(store, tmp_path):
    path = require_model(store, "qwen2_5_coder_0_5b")
    script = tmp_path / "exit_during_prefill.py"
    script.write_text(EXIT_DURING_PREFILL)
    for delay in ("0.2", "0.5", "0.8", "1.2"):
        proc = subprocess.run([sys.executable, str(script), str(path), delay], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, f"exit after {delay} s: code {proc.returncode}\n{proc.stderr[-2000:]}"
        assert "exiting" in proc.stdout


def test_a_closed_model_refuses_calls_with_a_clear_error(store):
    m = Llm(require_model(store, "qwen2_5_coder_0_5b"), LlmSettings(threads=1, max_tokens=4))
    m.load()
    m.close()
    assert not m.loaded
    with pytest.raises(ModelError, match="closed"):
        m.prefill("<|im_start|>system\nhello<|im_end|>\n")


def test_a_turn_has_every_cpu_until_its_first_sentence_is_written(llm, monkeypatch):
    """llm.first_threads: a reply's prompt and first sentence run on more llama.cpp threads (nothing else needs the
    CPU then); as soon as the voice's buffer would start on a piece, llama.cpp goes back to llm.threads, so Piper has
    a core for it. Leaving the call always restores the count."""
    import llama_cpp

    from edge_agent.llm_model import Llm
    from edge_agent.text import SentenceBuffer

    calls = []
    real = llama_cpp.llama_set_n_threads

    def spy(ctx, n, n_batch):
        calls.append((n, n_batch, llm.last_stats.text))
        return real(ctx, n, n_batch)

    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", spy)
    monkeypatch.setattr(Llm, "first_threads", property(lambda self: self.threads + 1))
    text = llm.complete([{"role": "user", "content": "Explain step by step how a refrigerator keeps food cold."}],
                        max_tokens=48)
    assert [c[:2] for c in calls] == [(2, 2), (1, 1)], calls
    at_calm = calls[1][2]
    assert SentenceBuffer().push(at_calm) and len(at_calm) < len(text), (at_calm, text)  # a piece, not the end
    assert llama_cpp.llama_n_threads(llm._llama._ctx.ctx) == 1
    calls.clear()
    monkeypatch.setattr(Llm, "first_threads", property(lambda self: self.threads))  # first_threads 1: no switch
    llm.complete(_msgs("Say hello."), max_tokens=8)
    assert calls == []
