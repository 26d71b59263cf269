"""The home: floors, areas and entities, loaded from config and/or a YAML file, validated at load.

The file format is the one of Home Assistant's intent test fixtures (``floors``, ``areas``, ``entities`` with ``id``,
``name``, ``area``, ``state``, ``attributes.device_class``), extended with the keys this agent needs per entity:
``aliases``, ``sensitive``, ``mqtt`` (how to command the device) and ``state_topic``. Only what is configured here can
ever be commanded: the intent handler resolves every target against this registry, never against free text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import REPO_ROOT, HomeSettings
from .errors import ConfigError

_ENTITY_ID = re.compile(r"^[a-z_][a-z0-9_]*\.[A-Za-z0-9_ ]+$")
_ENTITY_KEYS = {"id", "name", "aliases", "area", "device_class", "sensitive", "mqtt", "state_topic", "state",
                "attributes", "domain", "state_with_unit"}
_AREA_KEYS = {"id", "name", "aliases", "floor"}
_FLOOR_KEYS = {"id", "name", "aliases"}
_TOP_KEYS = {"language", "floors", "areas", "entities", "timers", "media", "tests"}


def normalize_name(name: str) -> str:
    """How names are compared: case-folded, single spaces (as Home Assistant compares names)."""
    return " ".join(name.strip().casefold().split())


@dataclass(frozen=True)
class Floor:
    id: str
    name: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Area:
    id: str
    name: str
    aliases: tuple[str, ...] = ()
    floor: str | None = None  # floor id


@dataclass(frozen=True)
class Entity:
    id: str  # e.g. "light.kitchen"
    name: str
    aliases: tuple[str, ...] = ()
    area: str | None = None  # area id
    device_class: str | None = None
    sensitive: bool = False
    mqtt: dict[str, Any] | None = field(default=None, hash=False, compare=False)  # command mapping
    state_topic: str | None = None
    initial_state: str | None = None  # the state known at load (fixtures), until MQTT says otherwise
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _expand_template(text: str) -> list[str]:
    """A fixture name may be a hassil template ("Trader Joe[']s"): every spelling it allows, first = canonical."""
    from hassil import is_template, parse_sentence, sample_expression

    if not is_template(text):
        return [text.strip()]
    out: list[str] = []
    for s in sample_expression(parse_sentence(text).expression):
        s = " ".join(s.split())
        if s and s not in out:
            out.append(s)
    return out or [text.strip()]


class Home:
    """The registry of floors, areas and entities; lookups by spoken name, area, floor, domain and device class."""

    def __init__(self, floors: dict[str, Floor], areas: dict[str, Area], entities: dict[str, Entity],
                 sensitive_domains: tuple[str, ...] = ()) -> None:
        self.floors = floors
        self.areas = areas
        self.entities = entities
        self.sensitive_domains = sensitive_domains

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, home_settings: HomeSettings, file: str | Path | None = None) -> Home:
        """Build the home from ``home.areas``/``home.entities`` in config plus a fixtures-shaped YAML file.

        ``file`` overrides ``home.file``. Raises ConfigError naming the key path of the first problem.
        """
        sources: list[tuple[str, dict[str, Any]]] = []
        path = file if file is not None else home_settings.file
        if path is not None:
            p = Path(path).expanduser()
            if not p.is_absolute() and not p.is_file() and (REPO_ROOT / p).is_file():
                p = REPO_ROOT / p  # config paths are relative to the repository root, as elsewhere in config
            if not p.is_file():
                raise ConfigError(f"home.file: {p} not found", fix="pass an existing YAML file of areas and entities")
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{p}: not valid YAML: {e}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{p}: the top level must be a mapping with floors/areas/entities")
            unknown = set(data) - _TOP_KEYS
            if unknown:
                raise ConfigError(f"{p}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
            sources.append((str(p), data))
        sources.append(("home", {"areas": home_settings.areas, "entities": home_settings.entities}))

        floors: dict[str, Floor] = {}
        areas: dict[str, Area] = {}
        raw_entities: list[tuple[str, dict[str, Any]]] = []
        for src, data in sources:
            for i, f in enumerate(_as_list(data.get("floors"), f"{src}: floors")):
                kp = f"{src}: floors[{i}]"
                _check_keys(f, _FLOOR_KEYS, kp)
                fid = _req_str(f, "id", kp)
                names = _expand_template(_req_str(f, "name", kp))
                floors[fid] = Floor(fid, names[0], tuple(names[1:]) + _str_tuple(f.get("aliases"), f"{kp}.aliases"))
            for i, a in enumerate(_as_list(data.get("areas"), f"{src}: areas")):
                kp = f"{src}: areas[{i}]" if src != "home" else f"home.areas[{i}]"
                _check_keys(a, _AREA_KEYS, kp)
                names = _expand_template(_req_str(a, "name", kp))
                aid = a.get("id") or re.sub(r"\W+", "_", names[0].casefold()).strip("_")
                if not isinstance(aid, str):
                    raise ConfigError(f"{kp}.id: expected a string, got {aid!r}")
                floor = a.get("floor")
                if floor is not None and not isinstance(floor, str):
                    raise ConfigError(f"{kp}.floor: expected a floor id (string), got {floor!r}")
                areas[aid] = Area(aid, names[0], tuple(names[1:]) + _str_tuple(a.get("aliases"), f"{kp}.aliases"),
                                  floor)
            for i, e in enumerate(_as_list(data.get("entities"), f"{src}: entities")):
                kp = f"{src}: entities[{i}]" if src != "home" else f"home.entities[{i}]"
                raw_entities.append((kp, e))

        for aid, a in areas.items():
            if a.floor is not None and a.floor not in floors:
                if floors:
                    raise ConfigError(f"areas ({aid}).floor: unknown floor {a.floor!r}; known: {', '.join(floors)}")
                floors[a.floor] = Floor(a.floor, a.floor.replace("_", " "))

        area_lookup = {aid: aid for aid in areas}
        for a in areas.values():
            for n in (a.name, *a.aliases):
                area_lookup.setdefault(normalize_name(n), a.id)

        entities: dict[str, Entity] = {}
        sensitive = tuple(home_settings.sensitive_domains)
        for kp, e in raw_entities:
            ent = _parse_entity(e, kp, area_lookup, sensitive)
            if ent.id in entities:
                raise ConfigError(f"{kp}.id: duplicate entity id {ent.id!r}", fix="give every entity a unique id")
            entities[ent.id] = ent
        return cls(floors, areas, entities, sensitive)

    def spoken_names(self) -> tuple[list[str], list[str]]:
        """(device names, area and floor names) a user may say, aliases too, each once, in config order."""
        seen: set[str] = set()

        def once(groups: list[tuple[str, ...]]) -> list[str]:
            out: list[str] = []
            for names in groups:
                for n in names:
                    if n.strip() and normalize_name(n) not in seen:
                        seen.add(normalize_name(n))
                        out.append(n)
            return out

        devices = once([e.names for e in self.entities.values()])
        places = once([*((a.name, *a.aliases) for a in self.areas.values()),
                       *((f.name, *f.aliases) for f in self.floors.values())])
        return devices, places

    # ------------------------------------------------------------------ lookups
    def area_by_name(self, name: str) -> Area | None:
        """An area by id, name or alias (case-insensitive)."""
        if name in self.areas:
            return self.areas[name]
        key = normalize_name(name)
        for a in self.areas.values():
            if key == a.id.casefold() or any(normalize_name(n) == key for n in (a.name, *a.aliases)):
                return a
        return None

    def floor_by_name(self, name: str) -> Floor | None:
        """A floor by id, name or alias (case-insensitive)."""
        if name in self.floors:
            return self.floors[name]
        key = normalize_name(name)
        for f in self.floors.values():
            if key == f.id.casefold() or any(normalize_name(n) == key for n in (f.name, *f.aliases)):
                return f
        return None

    def find(self, name: str | None, area: str | None, domain: str | list[str] | None, device_class: Any = None,
             floor: str | None = None) -> list[Entity]:
        """Entities matching every given constraint (None = no constraint).

        ``name`` matches an entity's name, an alias, or its id; ``area``/``floor`` take ids, names or aliases (an
        unknown area or floor matches nothing); ``domain`` and ``device_class`` take one value or a list.
        """
        domains = {domain} if isinstance(domain, str) else set(domain) if domain else None
        classes = {device_class} if isinstance(device_class, str) else set(device_class) if device_class else None
        area_id: str | None = None
        if area is not None:
            a = self.area_by_name(area)
            if a is None:
                return []
            area_id = a.id
        floor_id: str | None = None
        if floor is not None:
            f = self.floor_by_name(floor)
            if f is None:
                return []
            floor_id = f.id
        key = normalize_name(name) if name is not None else None
        out = []
        for e in self.entities.values():
            if key is not None and key != e.id.casefold() and all(normalize_name(n) != key for n in e.names):
                continue
            if area_id is not None and e.area != area_id:
                continue
            if floor_id is not None and (e.area is None or self.areas[e.area].floor != floor_id):
                continue
            if domains is not None and e.domain not in domains:
                continue
            if classes is not None and e.device_class not in classes:
                continue
            out.append(e)
        return out

    def is_sensitive(self, entity: Entity) -> bool:
        """True if acting on the entity needs a spoken yes: its own flag, its domain or domain.device_class."""
        if entity.sensitive:
            return True
        keys = {entity.domain}
        if entity.device_class:
            keys.add(f"{entity.domain}.{entity.device_class}")
        return bool(keys & set(self.sensitive_domains))

    def area_name(self, area_id: str | None) -> str | None:
        a = self.areas.get(area_id) if area_id else None
        return a.name if a else None

    def domains(self) -> list[str]:
        return sorted({e.domain for e in self.entities.values()})


# --------------------------------------------------------------------------------------------------- parsing


def _as_list(value: Any, kp: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{kp}: expected a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{kp}[{i}]: expected a mapping, got {item!r}")
    return value


def _check_keys(d: dict[str, Any], allowed: set[str], kp: str) -> None:
    for k in d:
        if k not in allowed:
            import difflib

            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{kp}.{k}: unknown key{hint}; allowed: {', '.join(sorted(allowed))}")


def _req_str(d: dict[str, Any], key: str, kp: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{kp}.{key}: required, a non-empty string (got {v!r})")
    return v


def _str_tuple(v: Any, kp: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{kp}: expected a list of strings, got {v!r}")
    return tuple(x for x in v if x.strip())


def _parse_entity(e: dict[str, Any], kp: str, area_lookup: dict[str, str], sensitive_domains: tuple[str, ...]
                  ) -> Entity:
    _check_keys(e, _ENTITY_KEYS, kp)
    if "id" not in e and isinstance(e.get("domain"), str) and isinstance(e.get("name"), str):
        # the 2026 test format names a domain instead of an id: light + "Overhead Light" -> light.overhead_light
        eid = f"{e['domain']}." + (re.sub(r"\W+", "_", e["name"].casefold()).strip("_") or "entity")
    else:
        eid = _req_str(e, "id", kp)
    if "." not in eid and isinstance(e.get("domain"), str):
        eid = f"{e['domain']}.{eid}"
    if not _ENTITY_ID.match(eid):
        raise ConfigError(f"{kp}.id: {eid!r} is not an entity id; expected <domain>.<object>, e.g. light.kitchen")
    names = _expand_template(_req_str(e, "name", kp))
    aliases = tuple(names[1:]) + _str_tuple(e.get("aliases"), f"{kp}.aliases")
    area = e.get("area")
    if area is not None:
        if not isinstance(area, str):
            raise ConfigError(f"{kp}.area: expected an area id or name, got {area!r}")
        resolved = area_lookup.get(area) or area_lookup.get(normalize_name(area))
        if resolved is None:
            known = ", ".join(sorted(k for k in area_lookup if "_" in k or k.isidentifier())) or "none configured"
            raise ConfigError(f"{kp}.area: unknown area {area!r}; known areas: {known}",
                              fix="add it under home.areas (or the home file's areas) or fix the spelling")
        area = resolved
    attrs = e.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise ConfigError(f"{kp}.attributes: expected a mapping, got {attrs!r}")
    dc = e.get("device_class", attrs.get("device_class"))
    if dc is not None and not isinstance(dc, str):
        raise ConfigError(f"{kp}.device_class: expected a string, got {dc!r}")
    sens = e.get("sensitive", False)
    if not isinstance(sens, bool):
        raise ConfigError(f"{kp}.sensitive: expected true or false, got {sens!r}")
    mqtt = e.get("mqtt")
    if mqtt is not None:
        mqtt = _check_mqtt(mqtt, f"{kp}.mqtt")
    st = e.get("state_topic")
    if st is not None and (not isinstance(st, str) or not st or any(c in st for c in "#+")):
        raise ConfigError(f"{kp}.state_topic: expected an MQTT topic without wildcards, got {st!r}")
    state = e.get("state")
    if isinstance(state, dict):  # fixtures: {in: spoken state, out: HA state}
        state = state.get("out")
    if state is not None:
        state = str(state)
    return Entity(id=eid, name=names[0], aliases=aliases, area=area, device_class=dc, sensitive=sens, mqtt=mqtt,
                  state_topic=st, initial_state=state, attributes=dict(attrs))


MQTT_PRESETS = ("zigbee2mqtt", "tasmota", "generic")
_MQTT_KEYS = {"preset", "device", "topic", "payloads", "retain"}


def _check_mqtt(m: Any, kp: str) -> dict[str, Any]:
    if isinstance(m, str):  # shorthand: "zigbee2mqtt" / "tasmota" / "generic"
        m = {"preset": m}
    if not isinstance(m, dict):
        raise ConfigError(f"{kp}: expected a mapping {{preset, device, topic, payloads}}, got {m!r}")
    _check_keys(m, _MQTT_KEYS, kp)
    preset = m.get("preset", "generic")
    if preset not in MQTT_PRESETS:
        raise ConfigError(f"{kp}.preset: got {preset!r}; allowed: {', '.join(MQTT_PRESETS)}")
    for key in ("device", "topic"):
        v = m.get(key)
        if v is not None and (not isinstance(v, str) or not v or "#" in v or "+" in v):
            raise ConfigError(f"{kp}.{key}: expected a non-empty string without MQTT wildcards, got {v!r}")
    payloads = m.get("payloads", {})
    if not isinstance(payloads, dict) or not all(isinstance(v, str) for v in payloads.values()):
        raise ConfigError(f"{kp}.payloads: expected a mapping of action -> payload template string, got {payloads!r}")
    retain = m.get("retain", False)
    if not isinstance(retain, bool):
        raise ConfigError(f"{kp}.retain: expected true or false, got {retain!r}")
    return {**m, "preset": preset, "payloads": dict(payloads), "retain": retain}
