"""Home.load: the fixtures format, config entities, lookups, sensitivity, and error messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import HomeSettings, load_settings
from edge_agent.errors import ConfigError
from edge_agent.home import Home

FIXTURES = Path("/work/shared/conformance/ha-intents-en/_fixtures.yaml")


@pytest.fixture(scope="module")
def home() -> Home:
    assert FIXTURES.is_file(), "Home Assistant's intent test fixtures are missing"
    return Home.load(HomeSettings(), FIXTURES)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "home.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_fixtures_load(home: Home) -> None:
    assert len(home.floors) == 5
    assert home.areas["kitchen_id"].name == "Kitchen"
    assert home.areas["kitchen_id"].floor == "first_floor_id"
    lamp = home.entities["light.bedroom_lamp"]
    assert (lamp.domain, lamp.area, lamp.initial_state) == ("light", "bedroom_id", "off")
    assert home.entities["cover.curtain_left"].device_class == "curtain"
    # {in, out} states keep Home Assistant's state ("out")
    assert home.entities["binary_sensor.phone_battery"].initial_state == "off"
    # a template name ("Trader Joe[']s") yields the canonical name plus aliases
    tj = home.entities["todo.trader_joes"]
    assert {tj.name, *tj.aliases} == {"Trader Joe's", "Trader Joes"}


def test_find(home: Home) -> None:
    ids = lambda es: sorted(e.id for e in es)  # noqa: E731
    assert ids(home.find("kitchen CEILING", None, None)) == ["light.kitchen_ceiling"]
    assert ids(home.find(None, "Kitchen", "light")) == ["light.kitchen_cabinets", "light.kitchen_ceiling",
                                                        "light.kitchen_countertop"]
    assert ids(home.find(None, "living_room_id", ["light", "fan"])) == ["fan.ceiling", "light.living_room_lamp",
                                                                       "light.play_corner"]
    # floor: kitchen, living room, garage, entrance are on the first floor
    assert "light.garage" in ids(home.find(None, None, "light", floor="First Floor"))
    assert "light.bedroom_lamp" not in ids(home.find(None, None, "light", floor="First Floor"))
    assert ids(home.find("Phone", None, None, "battery")) == ["binary_sensor.phone_battery"]
    assert home.find(None, "Attic", None) == []  # unknown area matches nothing, not everything
    assert ids(home.find("lock.front_door", None, None)) == ["lock.front_door"]  # by id too
    assert home.area_by_name("living room").id == "living_room_id"
    assert home.area_by_name("nowhere") is None


def test_sensitive(home: Home) -> None:
    assert home.is_sensitive(home.entities["lock.front_door"])
    assert not home.is_sensitive(home.entities["light.bedroom_lamp"])
    assert not home.is_sensitive(home.entities["cover.curtain_left"])
    h = Home.load(HomeSettings(entities=[
        {"id": "cover.garage", "name": "Garage Door", "device_class": "garage"},
        {"id": "switch.heater", "name": "Heater", "sensitive": True},
        {"id": "alarm_control_panel.house", "name": "Alarm"},
    ]))
    assert all(h.is_sensitive(e) for e in h.entities.values())


def test_config_entities_merge_with_file(tmp_path: Path) -> None:
    f = write(tmp_path, "areas:\n  - {id: kitchen, name: Kitchen, aliases: [cookhouse]}\n")
    hs = HomeSettings(entities=[{"id": "light.k", "name": "Kitchen Light", "area": "cookhouse",
                                 "mqtt": {"preset": "tasmota", "device": "k1"}}])
    h = Home.load(hs, f)
    e = h.entities["light.k"]
    assert e.area == "kitchen" and e.mqtt["preset"] == "tasmota" and e.mqtt["device"] == "k1"


def test_settings_section_is_validated() -> None:
    s = load_settings(None, data={"home": {"entities": [{"id": "light.a", "name": "A"}], "mqtt_preset": "tasmota"}})
    assert s.home.mqtt_preset == "tasmota"
    with pytest.raises(ConfigError, match=r"home\.mqtt_preset"):
        load_settings(None, data={"home": {"mqtt_preset": "hue"}})


@pytest.mark.parametrize(("yaml_text", "pattern"), [
    ("entities:\n  - {id: light.a, name: A, area: attic}\n", r"entities\[0\]\.area: unknown area 'attic'"),
    ("entities:\n  - {id: lamp, name: A}\n", r"entities\[0\]\.id: 'lamp' is not an entity id"),
    ("entities:\n  - {id: light.a, nmae: A}\n", r"entities\[0\]\.nmae: unknown key \(did you mean 'name'\?\)"),
    ("entities:\n  - {id: light.a}\n", r"entities\[0\]\.name: required"),
    ("entities:\n  - {id: light.a, name: A}\n  - {id: light.a, name: B}\n", r"entities\[1\]\.id: duplicate"),
    ("entities:\n  - {id: light.a, name: A, mqtt: {preset: hue}}\n",
     r"entities\[0\]\.mqtt\.preset: got 'hue'; allowed: zigbee2mqtt, tasmota, generic"),
    ("entities:\n  - {id: light.a, name: A, mqtt: {topic: 'a/#'}}\n", r"entities\[0\]\.mqtt\.topic"),
    ("entities:\n  - {id: light.a, name: A, sensitive: maybe}\n", r"entities\[0\]\.sensitive: expected true"),
    ("areas:\n  - {id: k, name: K, floor: 3}\n", r"areas\[0\]\.floor"),
    ("rooms: []\n", r"unknown key 'rooms'"),
    ("entities: {a: 1}\n", r"entities: expected a list"),
    ("- a\n", r"top level must be a mapping"),
])
def test_load_errors_name_the_key(tmp_path: Path, yaml_text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Home.load(HomeSettings(), write(tmp_path, yaml_text))


def test_missing_file_and_config_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"home\.file: .*not found"):
        Home.load(HomeSettings(), tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"home\.entities\[0\]\.area: unknown area 'attic'"):
        Home.load(HomeSettings(entities=[{"id": "light.a", "name": "A", "area": "attic"}]))


def test_entity_without_id_takes_domain_and_name(tmp_path: Path) -> None:
    h = Home.load(HomeSettings(), write(tmp_path, "entities:\n  - {name: Overhead Light, domain: light}\n"))
    assert list(h.entities) == ["light.overhead_light"]
