"""The LLM wrapper: pure helpers with plain values, then the real Qwen2.5-Coder-0.5B model (loaded once).

What must hold on a Pi: the fixed prompt prefix is evaluated once (KV-cache reuse, measured), a cancel stops
generation within a token or two, a timeout raises ``LlmError`` (never hangs), and constrained JSON is parsed and
validated (bad output is an ``LlmError`` naming the problem).
"""

from __future__ import annotations

import threading
import time

import pytest

from edge_agent.config import LlmSettings
from edge_agent.errors import LlmError, ModelError
from edge_agent.llm import Llm, _find_stop, _partial_stop_len, parse_json_output, render_chatml

from .conftest import require_model

# ----------------------------------------------------------------------------------------------- pure helpers


def test_render_chatml_roles_and_tool_response():
    text = render_chatml([{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                          {"role": "tool", "content": '{"ok": true}'}])
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
                    '<|im_start|>user\n<tool_response>\n{"ok": true}\n</tool_response><|im_end|>\n'
                    "<|im_start|>assistant\n")


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


def _msgs(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]


def test_prefix_is_reused_from_the_kv_cache(llm):
    llm.complete(_msgs("Name a colour."), max_tokens=2)
    first = llm.last_stats
    # something else in between: a different conversation would share only the system prefix as well
    llm.complete(_msgs("Name a fruit."), max_tokens=2)
    second = llm.last_stats
    print(f"\nfirst: {first.to_json()}\nsecond: {second.to_json()}")
    assert first.n_prompt > 300
    # only the user turn is evaluated again: the ~350-token prefix comes from the cache
    assert second.n_cached >= first.n_prompt - 20
    assert second.n_evaluated <= 20
    assert second.t_prompt_s < first.t_prompt_s / 4, (first.t_prompt_s, second.t_prompt_s)
    # the time to first token follows
    assert second.t_first_token - second.t_start < (first.t_first_token - first.t_start) / 2


def test_stream_yields_fragments_and_stops_at_end_of_turn(llm):
    frags = list(llm.stream(_msgs("What is two plus two? Answer with the number only."), max_tokens=16))
    text = "".join(frags)
    assert "4" in text
    assert "<|im_end|>" not in text
    assert llm.last_stats.stopped == "eos"


def test_cancel_stops_within_a_few_tokens(llm):
    cancel = threading.Event()
    n = 0
    for _ in llm.stream(_msgs("Tell me a long story about a dragon."), max_tokens=200, cancel=cancel,
                        temperature=0.7):
        n += 1
        if n == 3:
            cancel.set()
    st = llm.last_stats
    assert st.stopped == "cancelled"
    assert st.n_gen <= 4, st.to_json()


def test_cancel_during_prompt_evaluation(llm):
    cancel = threading.Event()
    cancel.set()
    t0 = time.monotonic()
    out = list(llm.stream(_msgs("An entirely new question that is not cached: " + "blue " * 100), cancel=cancel))
    assert out == []
    assert llm.last_stats.stopped == "cancelled"
    assert time.monotonic() - t0 < 1.0


def test_timeout_raises_llm_error(llm):
    # ~130 uncached tokens at ~80 tokens/s cannot be done in 0.3 s
    with pytest.raises(LlmError) as e:
        llm.complete(_msgs("Fresh words to evaluate: " + "green apple " * 60), timeout_s=0.3)
    assert e.value.code == "llm" and "timed out" in e.value.message


def test_complete_json_follows_the_schema(llm):
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Berlin", "Rome"]},
                                               "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    out = llm.complete_json([{"role": "system", "content": "Reply in JSON."},
                             {"role": "user", "content": "What is the capital of Italy?"}], schema)
    assert out["city"] == "Rome", out
    assert isinstance(out["country"], str)


def test_warmup_saves_and_restores_the_prefix(store, tmp_path):
    path = require_model(store, "qwen2_5_coder_0_5b")
    prefix = render_chatml([{"role": "system", "content": SYSTEM}], add_generation_prompt=False)
    a = Llm(path, LlmSettings(threads=LLM_THREADS), cache_dir=tmp_path)
    first = a.warmup(prefix)
    a.close()
    assert first.n_evaluated == first.n_prompt > 300
    assert len(list(tmp_path.glob("prefix-*.state"))) == 1
    b = Llm(path, LlmSettings(threads=LLM_THREADS, max_tokens=8, temperature=0.0), cache_dir=tmp_path)
    second = b.warmup(prefix)
    assert second.n_evaluated == 0 and second.t_prompt_s < first.t_prompt_s / 4
    # the restored cache is really used: a request only evaluates its own tokens, and the model still makes sense
    text = b.complete(_msgs("What is two plus two? Answer with the number only."))
    assert b.last_stats.n_cached >= first.n_prompt - 4
    assert "4" in text
    b.close()
