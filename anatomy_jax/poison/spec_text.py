"""Named poison specs from text (`checkerboard:size=2:at=top-left:target=1:f=0.1:c=1`) or from a
JSON file of such objects, for flags like `--pattern-spec` that plant several patterns at once.

Parsing checks everything that needs no dataset (kind, location, ranges of alpha, f and c, signs of
size/target/seed) with the specs' own `validate`; whether a size fits the images or a target class
exists is checked later, by `PoisonSpec.validate`, against the data.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, NamedTuple, Sequence

from anatomy_jax.poison.patterns import LOCATIONS, PATTERN_KINDS, PatternSpec
from anatomy_jax.poison.poisoning import PoisonSpec

KEYS = ("name", "size", "at", "alpha", "seed", "target", "f", "c", "clean-label")
_FILE_KEYS = ("kind", *KEYS)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")

PATTERN_SPEC_SYNTAX = f"""\
pattern spec syntax: KIND[:key=value]...   e.g. checkerboard:size=2:at=top-left:target=1:f=0.1:c=1
  KIND         {', '.join(PATTERN_KINDS)}
  f            frequency: fraction of training images that carry the pattern, in [0, 1] (required)
  c            correlation P(label = target | pattern), in [0, 1] (default 1)
  target       target class (default 0)
  size         side of the square patch in pixels (default: 2 on images below 16 px, else 3)
  at           location: {', '.join(LOCATIONS)} (default bottom-right)
  alpha        opacity / amplitude in (0, 1] (default: 1 for patches, 0.2 blend, 0.1 noise)
  seed         seed of the pattern's random pixels (default 0)
  clean-label  true: poison only target-class images, change no label (default false)
  name         the name results use (default: kind, size and location); no ':'
A patterns file is a JSON list of objects with the same keys plus "kind"."""


class NamedPoison(NamedTuple):
    """A poison spec with the name that results and figures use for it."""

    name: str
    poison: PoisonSpec


def _fail(message: str) -> ValueError:
    return ValueError(f"{message}; allowed keys: {', '.join(KEYS)}")


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _fail(f"{key}={value!r} is not an integer")


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _fail(f"{key}={value!r} is not a number") from None
    else:
        raise _fail(f"{key}={value!r} is not a number")
    if not math.isfinite(number):
        raise _fail(f"{key}={value!r} is not a finite number")
    return number


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise _fail(f"{key}={value!r} is not true or false")


def _as_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{key}={value!r} is not a non-empty string")
    return value.strip()


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "kind": _as_str, "name": _as_str, "size": _as_int, "at": _as_str, "alpha": _as_float, "seed": _as_int,
    "target": _as_int, "f": _as_float, "c": _as_float, "clean-label": _as_bool,
}


def _build(values: dict[str, Any], default_size: int | None) -> NamedPoison:
    """A validated NamedPoison from raw key -> value pairs (strings from text, JSON values from files)."""
    unknown = [k for k in values if k not in _FILE_KEYS]
    if unknown:
        raise _fail(f"unknown key {unknown[0]!r}")
    v = {k: _PARSERS[k](k, raw) for k, raw in values.items()}
    if "kind" not in v:
        raise _fail("missing the pattern kind")
    if v["kind"] not in PATTERN_KINDS:
        raise _fail(f"unknown pattern kind {v['kind']!r} (kinds: {', '.join(PATTERN_KINDS)})")
    if "f" not in v:
        raise _fail(f"missing f (the frequency) in the {v['kind']} spec")
    size = v.get("size", PatternSpec.size if default_size is None else default_size)
    for key, value, low in (("size", size, 1), ("target", v.get("target", 0), 0), ("seed", v.get("seed", 0), 0)):
        if value < low:
            raise _fail(f"{key}={value} must be >= {low}")
    clean_label = v.get("clean-label", False)
    if clean_label and v.get("c", 1.0) != 1.0:
        raise _fail(f"c={v['c']} with clean-label=true: clean-label specs relabel nothing, so c must be 1 or omitted")
    pattern = PatternSpec(kind=v["kind"], size=size, location=v.get("at", PatternSpec.location),
                          alpha=v.get("alpha"), seed=v.get("seed", 0))
    poison = PoisonSpec(pattern=pattern, target=v.get("target", 0), frequency=v["f"], correlation=v.get("c", 1.0),
                        clean_label=clean_label)
    try:  # the dataset-free checks; the shape and class count here are ones any valid spec fits
        poison.validate(num_classes=poison.target + 1, image_shape=(size, size, 1))
    except ValueError as e:
        raise _fail(str(e)) from None
    name = v.get("name", pattern.name)
    if ":" in name:
        raise _fail(f"name={name!r} contains ':'")
    return NamedPoison(name, poison)


def parse_pattern_spec(text: str, *, default_size: int | None = None) -> NamedPoison:
    """Parses `KIND[:key=value]...` (see PATTERN_SPEC_SYNTAX) into a validated NamedPoison.

    `default_size` is the patch size when `size` is not given (None: PatternSpec's default).
    Raises ValueError naming the offending part and listing the allowed keys.
    """
    try:
        if not isinstance(text, str) or not text.strip():
            raise _fail(f"empty pattern spec {text!r}")
        kind, *parts = [p.strip() for p in text.strip().split(":")]
        if "=" in kind:
            raise _fail(f"{kind!r} comes first, where the pattern kind belongs (kinds: {', '.join(PATTERN_KINDS)})")
        values: dict[str, Any] = {"kind": kind}
        for part in parts:
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or not key or not value.strip():
                raise _fail(f"{part!r} is not key=value")
            if key == "kind":
                raise _fail("key 'kind' is not a key here: the kind comes first, before any ':'")
            if key in values:
                raise _fail(f"key {key!r} given twice")
            values[key] = value
        return _build(values, default_size)
    except ValueError as e:
        raise ValueError(f"pattern spec {text!r}: {e}") from None


def format_pattern_spec(named: NamedPoison) -> str:
    """The text that `parse_pattern_spec` turns back into `named` (every field written out)."""
    p, s = named.poison, named.poison.pattern
    parts = [s.kind, f"name={named.name}", f"size={s.size}", f"at={s.location}"]
    if s.alpha is not None:
        parts.append(f"alpha={float(s.alpha)!r}")
    parts += [f"seed={s.seed}", f"target={p.target}", f"f={float(p.frequency)!r}", f"c={float(p.correlation)!r}"]
    if p.clean_label:
        parts.append("clean-label=true")
    return ":".join(parts)


def pattern_spec_dict(named: NamedPoison) -> dict[str, Any]:
    """The JSON object (one entry of a patterns file) that `load_patterns_file` reads back as `named`."""
    p, s = named.poison, named.poison.pattern
    entry = {"kind": s.kind, "name": named.name, "size": s.size, "at": s.location, "alpha": s.alpha,
             "seed": s.seed, "target": p.target, "f": p.frequency, "c": p.correlation, "clean-label": p.clean_label}
    return {k: v for k, v in entry.items() if v is not None}


def check_unique_names(poisons: Sequence[NamedPoison]) -> None:
    """Raises ValueError naming every name used more than once (results are keyed by name)."""
    names = [p.name for p in poisons]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        counts = ", ".join(f"{n!r} ({names.count(n)} times)" for n in duplicates)
        raise ValueError(f"pattern names must be unique, got {counts}; give each spec its own name=")


def load_patterns_file(path: str | os.PathLike[str], *, default_size: int | None = None) -> list[NamedPoison]:
    """Reads a JSON list of pattern spec objects (keys as in PATTERN_SPEC_SYNTAX plus "kind").

    JSON only, nothing executed. Raises ValueError naming the file and the entry index.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            entries = json.load(fh)
    except OSError as e:
        raise ValueError(f"patterns file {os.fspath(path)}: cannot read it: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"patterns file {os.fspath(path)}: not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise ValueError(f"patterns file {os.fspath(path)}: expected a JSON list of objects, got "
                         f"{type(entries).__name__}")
    poisons = []
    for i, entry in enumerate(entries):
        try:
            if not isinstance(entry, dict):
                raise _fail(f"expected an object, got {type(entry).__name__}")
            poisons.append(_build(entry, default_size))
        except ValueError as e:
            raise ValueError(f"patterns file {os.fspath(path)}: entry {i}: {e}") from None
    try:
        check_unique_names(poisons)
    except ValueError as e:
        raise ValueError(f"patterns file {os.fspath(path)}: {e}") from None
    return poisons
