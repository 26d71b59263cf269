"""Which CPU this is, which llama.cpp build runs on it, and a smoke test that a build works before it is trusted.

A llama.cpp compiled with the compiler's native flags on one machine can die with SIGILL on another, or even on the
same one: on Intel Xeons with AMX, llama.cpp's worker threads use AMX tile instructions without asking the kernel for
the tile state, and the first LLM call is killed ("Illegal instruction"). ``tools/setup.sh`` builds a portable
variant and runs ``python -m edge_agent.cpu MODEL.gguf`` in a subprocess after installing it; a crash there is
reported with the CPU features involved and what to do, instead of surfacing later as a dead daemon.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import sys
from pathlib import Path

SMOKE_TIMEOUT_S = 120.0
# instruction-set extensions a llama.cpp x86 build may use, from the most to the least often missing
RISKY_X86 = ("amx_tile", "amx_int8", "amx_bf16", "avx512f", "avx512_vnni", "avx512_bf16", "avx512vbmi",
             "avx_vnni", "avx2", "fma", "f16c")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (x86 'flags', Arm 'Features'); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def llama_features() -> dict[str, bool]:
    """The instruction sets the installed llama.cpp CPU backend was built with (``llama_print_system_info``)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode() if isinstance(info, bytes) else str(info)
    feats: dict[str, bool] = {}
    for part in text.replace("\n", "|").split("|"):
        name, eq, value = part.partition("=")
        if eq and value.strip() in ("0", "1"):
            feats[name.strip().split(":")[-1].strip()] = value.strip() == "1"
    return feats


def llama_variant() -> str:
    """A one-line name of the llama.cpp CPU build in use, e.g. 'x86_64: AVX2 FMA F16C (no AVX-512, no AMX)'."""
    try:
        feats = llama_features()
    except Exception as e:  # noqa: BLE001 - a doctor line, never a crash
        return f"unknown ({e})"
    on = [k for k, v in feats.items() if v]
    shown = [k for k in on if k.upper().startswith(("AVX", "FMA", "F16C", "AMX", "NEON", "ARM_FMA", "DOTPROD",
                                                   "SVE", "SSE3", "SSSE3", "BMI2", "LLAMAFILE", "OPENMP"))]
    missing = [name for name, key in (("AVX-512", "AVX512"), ("AMX", "AMX_INT8")) if not feats.get(key)]
    tail = f" (no {', no '.join(missing)})" if missing and platform.machine() in ("x86_64", "AMD64") else ""
    return f"{platform.machine()}: {' '.join(shown) or 'baseline'}{tail}"


def smoke_test(model: str | Path, timeout: float = SMOKE_TIMEOUT_S) -> tuple[bool, str]:
    """Load ``model`` and generate a few tokens in a subprocess; (ok, message). A SIGILL names the CPU features."""
    code = (
        "import llama_cpp, sys\n"
        "m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=2, verbose=False)\n"
        "out = m.create_completion('The capital of France is', max_tokens=4, temperature=0.0)\n"
        "print(repr(out['choices'][0]['text']))\n"
    )
    try:
        p = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"the LLM smoke test did not finish within {timeout:.0f} s"
    if p.returncode == 0:
        return True, f"llama.cpp works on this CPU ({llama_variant()}): {p.stdout.strip()}"
    if p.returncode < 0:
        # SIGILL where the CPU or kernel refuses an instruction; a native build with AMX on an Intel Xeon died with
        # SIGSEGV here (the tile state the kernel never granted): either way the build assumes another CPU
        try:
            sig = signal.Signals(-p.returncode).name
        except ValueError:
            sig = f"signal {-p.returncode}"
        flags = cpu_flags()
        have = " ".join(f for f in RISKY_X86 if f in flags) or "none of AVX2/AVX-512/AMX"
        return False, (
            f"llama.cpp died with {sig} on its first call on {cpu_model()}: the installed build likely uses an "
            f"instruction this CPU or kernel does not allow (CPU advertises: {have}; "
            f"build: {llama_variant()}). Fix: rebuild portably: remove ~/.cache/edge-agent/wheels and .venv, then "
            f"run tools/setup.sh again (it builds with GGML_NATIVE=OFF); on an old CPU without AVX2 set "
            f"EDGE_AGENT_LLAMA_CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF\"")
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return False, f"the LLM smoke test failed (exit {p.returncode}): {' | '.join(tail)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edge_agent.cpu MODEL.gguf", file=sys.stderr)
        return 2
    ok, message = smoke_test(args[0])
    print(("ok: " if ok else "error[llm]: ") + message, file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
