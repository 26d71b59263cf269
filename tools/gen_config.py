#!/usr/bin/env python3
"""Write config.yaml from the typed settings: every option, its default and its help text.

Run after adding a setting: `python tools/gen_config.py > config.yaml`. tests/test_config.py fails when config.yaml
misses an option that the settings have.
"""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import typing
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.config import Settings, _type_name  # noqa: E402

HEADER = """\
# edge-agent configuration. Every option is listed with its default; `edge-agent config check` validates a file.
# Unknown keys and bad values stop the program with the key's path and what is allowed.
# Model options take a name from `edge-agent models list` or a path to a model file/folder.
"""


def _dump_value(v: typing.Any) -> str:
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render(cls: type = Settings, indent: int = 0) -> list[str]:
    lines: list[str] = []
    hints = typing.get_type_hints(cls)
    inst = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        pad = " " * indent
        help_text = f.metadata.get("help", "")
        bounds = []
        if f.metadata.get("min") is not None:
            bounds.append(f"min {f.metadata['min']}")
        if f.metadata.get("max") is not None:
            bounds.append(f"max {f.metadata['max']}")
        if dataclasses.is_dataclass(tp):
            if indent == 0:
                lines.append("")
            lines += [pad + "# " + ln for ln in textwrap.wrap(help_text, 110 - indent)]
            lines.append(f"{pad}{f.name}:")
            lines += render(tp, indent + 2)
            continue
        kind = _type_name(tp) + (f" ({', '.join(bounds)})" if bounds else "")
        lines += [pad + "# " + ln for ln in textwrap.wrap(f"{help_text} [{kind}]", 110 - indent)]
        value = getattr(inst, f.name)
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            lines.append(f"{pad}{f.name}:")
            for item in value:
                d = dataclasses.asdict(item)
                first = True
                for k, v in d.items():
                    lines.append(f"{pad}  {'- ' if first else '  '}{k}: {_dump_value(v)}")
                    first = False
        else:
            lines.append(f"{pad}{f.name}: {_dump_value(value)}")
    return lines


if __name__ == "__main__":
    sys.stdout.write(HEADER + "\n".join(render()) + "\n")
