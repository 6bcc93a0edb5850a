"""Named poison specs from text and JSON files: round trips, defaults and clear errors."""

import json

import pytest

from anatomy_jax.poison.patterns import PatternSpec
from anatomy_jax.poison.poisoning import PoisonSpec
from anatomy_jax.poison.spec_text import (KEYS, PATTERN_SPEC_SYNTAX, NamedPoison, check_unique_names,
                                          format_pattern_spec, load_patterns_file, parse_pattern_spec,
                                          pattern_spec_dict)

ALLOWED = "allowed keys: " + ", ".join(KEYS)


def test_parses_every_key():
    named = parse_pattern_spec("checkerboard:size=2:at=top-left:alpha=0.5:seed=4:target=1:f=0.1:c=0.3:name=cb")
    pattern = PatternSpec(kind="checkerboard", size=2, location="top-left", alpha=0.5, seed=4)
    assert named == NamedPoison("cb", PoisonSpec(pattern=pattern, target=1, frequency=0.1, correlation=0.3))
    clean = parse_pattern_spec(" solid : f=0.05 : clean-label=TRUE ")
    assert clean.poison.clean_label and clean.poison.correlation == 1.0


def test_defaults():
    named = parse_pattern_spec("checkerboard:f=0.1")
    assert named.poison == PoisonSpec(pattern=PatternSpec(kind="checkerboard"), frequency=0.1)
    assert named.name == PatternSpec(kind="checkerboard").name == "checkerboard3x3@bottom-right"
    assert parse_pattern_spec("solid:f=0.1", default_size=5).poison.pattern.size == 5
    assert parse_pattern_spec("solid:f=0.1:size=2", default_size=5).poison.pattern.size == 2
    assert parse_pattern_spec("blend:f=0.1").name == "blend(alpha=0.2)"


@pytest.mark.parametrize("text", [
    "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1",
    "random:seed=7:size=4:at=random:f=0.3:c=0.37:name=rand",
    "noise:alpha=0.05:f=0.02",
    "blend:f=0.1:name=my blend",
    "solid:f=0.2:target=3:clean-label=true",
    "solid:f=0.1:name=noise(alpha=0.1)",  # '=' inside a value
])
def test_text_and_json_round_trips(text, tmp_path):
    named = parse_pattern_spec(text)
    assert parse_pattern_spec(format_pattern_spec(named)) == named
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps([pattern_spec_dict(named)]))
    assert load_patterns_file(path) == [named]


def test_loads_a_file(tmp_path):
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps([
        {"kind": "checkerboard", "size": 2, "at": "top-left", "target": 1, "f": 0.1, "c": 1},
        {"kind": "solid", "f": "0.2", "clean-label": True, "name": "white"},
    ]))
    a, b = load_patterns_file(str(path), default_size=4)
    assert a == parse_pattern_spec("checkerboard:size=2:at=top-left:target=1:f=0.1:c=1")
    assert b == parse_pattern_spec("solid:f=0.2:clean-label=true:name=white:size=4")


@pytest.mark.parametrize("text,message", [
    ("", "empty pattern spec"),
    ("checkerboard", "missing f"),
    ("checkerboard:size=2", "missing f"),
    ("square:f=0.1", "unknown pattern kind 'square'"),
    ("f=0.1:solid", "'f=0.1' comes first, where the pattern kind belongs"),
    ("solid:freq=0.1", "unknown key 'freq'"),
    ("solid:kind=solid:f=0.1", "key 'kind' is not a key here"),
    ("solid:f=0.1:f=0.2", "key 'f' given twice"),
    ("solid:f0.1", "'f0.1' is not key=value"),
    ("solid:f=", "'f=' is not key=value"),
    ("solid::f=0.1", "'' is not key=value"),
    ("solid:f=abc", "f='abc' is not a number"),
    ("solid:f=nan", "f='nan' is not a finite number"),
    ("solid:f=1.5", r"frequency must be in \[0, 1\], got 1.5"),
    ("solid:f=0.1:c=-0.1", r"correlation must be in \[0, 1\], got -0.1"),
    ("blend:f=0.1:alpha=0", r"pattern alpha must be in \(0, 1\], got 0.0"),
    ("solid:f=0.1:size=2.5", "size='2.5' is not an integer"),
    ("solid:f=0.1:size=0", "size=0 must be >= 1"),
    ("solid:f=0.1:target=-1", "target=-1 must be >= 0"),
    ("solid:f=0.1:seed=x", "seed='x' is not an integer"),
    ("solid:f=0.1:at=middle", "unknown pattern location 'middle'; choose one of bottom-right"),
    ("solid:f=0.1:clean-label=maybe", "clean-label='maybe' is not true or false"),
    ("solid:f=0.1:clean-label=true:c=0.5", "c must be 1 or omitted"),
])
def test_bad_text_names_the_part_and_lists_the_keys(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_pattern_spec(text)
    assert f"pattern spec {text!r}" in str(info.value) and ALLOWED in str(info.value)


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"kind": "solid", "f": 0.1}', "expected a JSON list of objects, got dict"),
    ('[{"kind": "solid", "f": 0.1}, 3]', "entry 1: expected an object, got int"),
    ('[{"kind": "solid", "f": 0.1}, {"f": 0.1}]', "entry 1: missing the pattern kind"),
    ('[{"kind": "solid", "f": 0.1, "colour": "red"}]', "entry 0: unknown key 'colour'"),
    ('[{"kind": "solid", "f": 0.1, "size": true}]', "entry 0: size=True is not an integer"),
    ('[{"kind": "solid", "f": 0.1, "size": 2.5}]', "entry 0: size=2.5 is not an integer"),
    ('[{"kind": "solid", "f": 0.1, "clean-label": "sure"}]', "entry 0: clean-label='sure' is not true or false"),
    ('[{"kind": "solid", "f": 2}]', r"entry 0: frequency must be in \[0, 1\]"),
    ('[{"kind": "solid", "f": 0.1, "name": "a:b"}]', "entry 0: name='a:b' contains ':'"),
    ('[{"kind": "solid", "f": 0.1, "name": "a"}, {"kind": "random", "f": 0.1, "name": "a"}]',
     r"pattern names must be unique, got 'a' \(2 times\)"),
])
def test_bad_files_name_the_file_and_the_entry(tmp_path, content, message):
    path = tmp_path / "patterns.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_patterns_file(path)
    assert f"patterns file {path}" in str(info.value)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"patterns file .*missing.json: cannot read it"):
        load_patterns_file(tmp_path / "missing.json")


def test_unique_names():
    a = parse_pattern_spec("solid:f=0.1")
    b = parse_pattern_spec("solid:f=0.2:at=top-left")
    check_unique_names([a, b])
    with pytest.raises(ValueError, match=r"'solid3x3@bottom-right' \(3 times\)"):
        check_unique_names([a, b, a, a])
    check_unique_names([a, parse_pattern_spec("solid:f=0.2:name=second")])


def test_syntax_help_lists_every_key_and_kind():
    for key in KEYS:
        assert f"  {key} " in PATTERN_SPEC_SYNTAX
    for kind in ("solid", "checkerboard", "random", "blend", "noise"):
        assert kind in PATTERN_SPEC_SYNTAX
    example = "checkerboard:size=2:at=top-left:target=1:f=0.1:c=1"
    assert example in PATTERN_SPEC_SYNTAX and parse_pattern_spec(example).poison.frequency == 0.1
