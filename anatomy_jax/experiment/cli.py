"""A command line generated from a frozen config dataclass.

Every field becomes `--field-name value` with its default and the `help` of its metadata shown in
`--help`. Tuples take comma-separated values (`--frequencies 0.01,0.1`), or, when the field's
metadata has `repeat=True`, one whole value per occurrence of the flag, in order (`--pattern-spec A
--pattern-spec B`); booleans that default to False are switches (`--resume`). Bad values exit with
a message and code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import types
import typing
from typing import Any, Callable, Sequence, TypeVar

from anatomy_jax.utils.errors import SettingsError

Config = TypeVar("Config")


def _scalar_parser(tp: Any) -> Callable[[str], Any]:
    if tp is bool:
        return lambda s: {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[s.lower()]
    return tp


def _field_parser(tp: Any) -> tuple[Callable[[str], Any], str]:
    """A str -> value parser for a field type, and a metavar."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        item = _scalar_parser(args[0])

        def parse_list(s: str) -> tuple:
            values = [v.strip() for v in s.split(",") if v.strip()]
            if not values:
                raise argparse.ArgumentTypeError("expected at least one comma-separated value")
            try:
                return tuple(item(v) for v in values)
            except (ValueError, KeyError) as e:
                raise argparse.ArgumentTypeError(f"cannot parse {s!r} as comma-separated {args[0].__name__} values") from e

        return parse_list, f"{args[0].__name__.upper()}[,...]"
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        parse_inner, metavar = _field_parser(inner)

        def parse_optional(s: str):
            return None if s.lower() in ("none", "auto", "") else parse_inner(s)

        return parse_optional, metavar
    scalar = _scalar_parser(tp)

    def parse_scalar(s: str):
        try:
            return scalar(s)
        except (ValueError, KeyError) as e:
            raise argparse.ArgumentTypeError(f"invalid {getattr(tp, '__name__', tp)} value {s!r}") from e

    return parse_scalar, getattr(tp, "__name__", "VALUE").upper()


class _Repeated(argparse.Action):
    """Appends each occurrence's value to a tuple; the first occurrence replaces the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        kept = () if current is self.default or current is None else tuple(current)
        setattr(namespace, self.dest, (*kept, values))


def _repeated_item_parser(field: dataclasses.Field, tp: Any) -> tuple[Callable[[str], Any], str]:
    """The parser and metavar of one occurrence of a `repeat=True` field of type `tuple[X, ...]`."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
        raise TypeError(f"field {field.name!r} has repeat=True, so its type must be tuple[X, ...], got {tp}")
    return _field_parser(args[0])


def build_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of `config_cls`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        tp = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if tp is bool and field.default is False:
            parser.add_argument(flag, dest=field.name, action="store_true", help=help_text)
            continue
        if field.metadata.get("repeat", False):
            parse, metavar = _repeated_item_parser(field, tp)
            shown = " ".join(f"{flag} {v}" for v in field.default) or "none"
            parser.add_argument(flag, dest=field.name, action=_Repeated, type=parse, default=field.default,
                                metavar=metavar, help=f"{help_text} (repeatable; default: {shown})".replace("%", "%%"))
            continue
        parse, metavar = _field_parser(tp)
        default = field.default
        shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
        parser.add_argument(flag, dest=field.name, type=parse, default=default, metavar=metavar,
                            help=f"{help_text} (default: {shown})".replace("%", "%%"))
    return parser


def parse_config(config_cls: type[Config], description: str, argv: Sequence[str] | None = None) -> Config:
    """Parses `argv` into a validated config; exits with code 2 and a message on bad input."""
    parser = build_parser(config_cls, description)
    namespace = parser.parse_args(argv)
    try:
        config = config_cls(**vars(namespace))
        validate = getattr(config, "validate", None)
        if validate is not None:
            validate()
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return config


def resume_command(out: str, argv: Sequence[str] | None = None) -> str:
    """The command line that continues this run: the same flags, `--out` pinned, `--resume`."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--out",):
            skip = True
            continue
        if a.startswith("--out=") or a in ("--resume", "--overwrite"):
            continue
        kept.append(a)
    return " ".join(shlex.quote(x) for x in [sys.executable, sys.argv[0], *kept, "--out", out, "--resume"])


def run_main(config_cls: type[Config], description: str, run: Callable[[Config, str], dict],
             summarise: Callable[[dict], str], name: str, argv: Sequence[str] | None = None) -> int:
    """The `main` of every experiment script: parse flags into a config, run it into --out (default
    `runs/<name>/<timestamp>`), print the summary and where the results went.

    Bad settings (`SettingsError`, raised before anything is written) exit with code 2 and a
    message; SIGINT/SIGTERM save a checkpoint, print the command that resumes and exit with
    130/143; any other error is a bug and keeps its traceback.
    """
    from anatomy_jax.experiment.outputs import default_out_dir
    from anatomy_jax.experiment.study import Interrupted

    config = parse_config(config_cls, description, argv)
    out = getattr(config, "out", None) or str(default_out_dir(name))
    try:
        results = run(config, out)
    except SettingsError as e:
        fail(str(e))
    except Interrupted as e:
        print(f"\n{e}: checkpoint saved, results so far in {out}/results.json\nresume with:\n  "
              f"{resume_command(out, argv)}", file=sys.stderr)
        return 128 + e.signum
    print(summarise(results))
    print(f"\nresults: {out}/results.json; figures: {', '.join(results.get('figures', []))}")
    return 0


def fail(message: str, code: int = 2) -> typing.NoReturn:
    """Prints `message` to stderr and exits with `code` (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
