"""The command line of a :class:`~sslab.config.Config`: every field is a flag, ``--help`` documents them.

Forms accepted (one field ``mask_ratio`` shown): ``--mask-ratio 0.6``, ``--mask_ratio 0.6``,
``--mask-ratio=0.6``, ``--mask_ratio=0.6`` (the form wandb sweep agents pass). Booleans take
``true/false`` (a bare ``--in-memory`` means true), tuples commas or a JSON list, dicts JSON, and
``none`` clears an optional field. ``--config runs/x/config.json`` (or ``--config runs/x``) starts
from a run's saved config, then the other flags apply on top. Options are never matched by prefix
(``--epoch`` is not ``--epochs``); a mistake is one :class:`~sslab.errors.SslabError` line with a
suggestion. Nothing here imports torch, so ``--help`` and flag mistakes answer at once.

Why our own ~200 lines on argparse rather than tyro / simple-parsing / jsonargparse: each of those
prints its own multi-line error panels and usage blocks, spells booleans ``--flag/--no-flag`` by
default, and imports more than argparse; what we need on top of argparse is small (one-line errors
with "did you mean", ``true/false`` values, help text read from the ``# comments`` of config.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable

from .errors import SslabError


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching, whose mistakes are one :class:`SslabError` line.

    Every parser built on it also takes ``--debug`` (show the traceback of a user error; see
    :mod:`sslab.errors`).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    def error(self, message: str) -> typing.NoReturn:
        raise SslabError(explain_parse_error(self, message))


def adopt_style(parser: argparse.ArgumentParser) -> None:
    """Give a plain argparse parser (and the sub-parsers it makes later) our style: no prefix matching,
    one-line errors, ``--debug``."""
    parser.allow_abbrev = False
    parser.error = lambda message: ArgumentParser.error(parser, message)  # type: ignore[method-assign]
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--option`` of ``parser`` and of its sub-commands."""
    out = []
    for a in parser._actions:
        out += [s for s in a.option_strings if s.startswith("--")]
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _option_strings(sub)
    return list(dict.fromkeys(out))


def explain_parse_error(parser: argparse.ArgumentParser, message: str) -> str:
    """One line for an argparse error message: what was wrong, with the value; the way out."""
    helpline = f"{parser.prog} --help lists every option"
    m = re.match(r"unrecognized arguments: (.*)", message)
    if m:
        bad = next((w for w in m.group(1).split() if w.startswith("-")), m.group(1).split()[0])
        name = bad.split("=", 1)[0]
        if not name.startswith("-"):
            return f"unexpected argument {bad!r}; {helpline}"
        close = difflib.get_close_matches(name.replace("_", "-"), _option_strings(parser), n=1, cutoff=0.6)
        way = f"did you mean {close[0]}?" if close else helpline
        return f"unknown option {name}; {way}"
    m = re.match(r"argument ([^:]+): expected one argument", message)
    if m:
        return f"{m.group(1).split('/')[0]} needs a value; {helpline}"
    m = re.match(r"argument ([^:]+): (.*)", message)
    if m:
        text = m.group(2)
        return text if ";" in text else f"{m.group(1).split('/')[0]}: {text}; {helpline}"
    m = re.match(r"the following arguments are required: (.*)", message)
    if m:
        return f"missing {m.group(1)}; {helpline}"
    return f"{message}; {helpline}"


# --- help text: the "# comments" of config.py, grouped by its "# --- section ---" lines ---

_SECTION = re.compile(r"^\s*# --- (?P<title>[^-]+?) ---\s*(?P<note>.*)$")
_FIELD = re.compile(r"^    (?P<name>[a-z_][a-z0-9_]*)\s*:\s*[^=]+=(?P<default>.*?)(?:\s+#\s*(?P<doc>.*))?$")


def field_docs() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``[(section, note, [(field, one-line description), ...]), ...]`` in config.py's order."""
    from . import config

    sections: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in Path(config.__file__).read_text().splitlines():
        if m := _SECTION.match(line):
            sections.append((m.group("title"), m.group("note").strip(), []))
        elif sections and (m := _FIELD.match(line)):
            sections[-1][2].append((m.group("name"), (m.group("doc") or "").strip()))
    return sections


# --- string -> value converters, each failing with one line that names the flag and gives an example ---

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_bool(s: str, name: str = "value") -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{_flag(name)} takes true or false, got {s!r}; e.g. {_flag(name)} true")


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string"}


def _scalar(tp: type, name: str, example: Any) -> Callable[[str], Any]:
    def conv(s: str) -> Any:
        try:
            return tp(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{_flag(name)} takes {_TYPE_WORDS[tp]}, got {s!r}; e.g. {_flag(name)} {example}") from None
    return conv


def _split_list(s: str) -> list[str]:
    s = s.strip()
    if s.startswith("["):  # a JSON list, as wandb sweeps pass list values
        try:
            return [str(x) for x in json.loads(s)]
        except json.JSONDecodeError:
            pass
    return [x.strip() for x in s.split(",") if x.strip() != ""]


def converter(tp: Any, name: str, example: Any = None) -> Callable[[str], Any]:
    """A string -> value converter for a field type (handles Optional, tuples, dicts)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = converter(next(a for a in args if a is not type(None)), name, example)
        return lambda s: None if s.strip().lower() in ("none", "null", "") else inner(s)
    if tp is bool:
        return lambda s: parse_bool(s, name)
    if tp in (int, float, str):
        return _scalar(tp, name, example if example is not None else {int: 1, float: 0.5, str: "x"}[tp])
    if origin is tuple:
        fixed = len(args) if args and args[-1] is not Ellipsis else None
        elem = args[0] if args else str
        word = {int: "integers", float: "numbers"}.get(elem, "values")
        ex = ",".join(str(x) for x in example) if example else "a,b"

        def conv_tuple(s: str) -> tuple:
            parts = _split_list(s)
            if fixed is not None and len(parts) != fixed:
                raise argparse.ArgumentTypeError(
                    f"{_flag(name)} takes {fixed} comma-separated {word}, got {s!r}; e.g. {_flag(name)} {ex}")
            try:
                return tuple(elem(x) for x in parts)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{_flag(name)} takes comma-separated {word}, got {s!r}; e.g. {_flag(name)} {ex}") from None
        return conv_tuple
    if tp is dict or origin is dict:
        def conv_dict(s: str) -> dict:
            try:
                out = json.loads(s)
            except json.JSONDecodeError as e:
                raise argparse.ArgumentTypeError(
                    f"{_flag(name)} takes a JSON object, got {s!r} ({e.msg}); e.g. {_flag(name)} '{{\"depth\": 6}}'"
                ) from None
            if not isinstance(out, dict):
                raise argparse.ArgumentTypeError(
                    f"{_flag(name)} takes a JSON object, got {s!r}; e.g. {_flag(name)} '{{\"depth\": 6}}'")
            return out
        return conv_dict
    raise TypeError(f"config field {name} has unsupported type {tp}")


def _metavar(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _metavar(next(a for a in args if a is not type(None))) + "|none"
    if tp is bool:
        return "true|false"
    if origin is tuple:
        return "A,B" if args and args[-1] is not Ellipsis else "A,B,..."
    if tp is dict or origin is dict:
        return "JSON"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(tp, "VALUE")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value) if value else "''"
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


# --- --config: a saved run config as the starting point ---

def load_config_file(base: Any, spec: str) -> Any:
    """``base`` with the fields saved in a run's ``config.json`` (a file or its run folder).

    Keys that are not fields (derived values such as ``lr_resolved``) are ignored. When the run set
    ``effective_batch_size``, its saved ``accum_iter`` was derived from it and the process count, so
    it is not taken (the new run derives its own).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise SslabError(f"--config {spec!r}: no such file; give a run's config.json or its run folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SslabError(f"--config {spec!r} is not JSON ({e}); give a run's config.json") from None
    if not isinstance(saved, dict):
        raise SslabError(f"--config {spec!r} holds a {type(saved).__name__}, not a config object; "
                         "give a run's config.json")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(base):
        if f.name not in saved:
            continue
        v = saved[f.name]
        if isinstance(v, list):
            v = tuple(v)
        values[f.name] = v
    if saved.get("effective_batch_size") is not None:
        values.pop("accum_iter", None)
    return dataclasses.replace(base, **values)


def _config_arg(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config":
            if i + 1 >= len(argv):
                raise SslabError("--config needs a value; give a run's config.json or its run folder")
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def build_parser(base: Any, description: str = "", prog: str | None = None) -> ArgumentParser:
    """The parser of every field of ``base``'s dataclass, its defaults ``base``'s values, grouped in sections."""
    hints = typing.get_type_hints(type(base))
    docs = {name: (title, note, doc) for title, note, fields in field_docs() for name, doc in fields}
    p = ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="%(prog)s [--config RUN/config.json] [--FIELD VALUE ...] [--debug]",
                       epilog="Values: booleans true/false; tuples a,b; dicts JSON; 'none' clears an optional "
                              "field. --name=value and --name_with_underscores work too.")
    p.add_argument("--config", metavar="RUN/config.json", default=None,
                   help="start from a run's saved config (its file or run folder), then apply the other flags")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(base):
        title, note, doc = docs.get(f.name, ("other", "", ""))
        if title not in groups:
            groups[title] = p.add_argument_group(title, note or None)
        tp = hints[f.name]
        default = getattr(base, f.name)
        kwargs: dict[str, Any] = dict(dest=f.name, type=converter(tp, f.name, default), default=default,
                                      metavar=_metavar(tp))
        if tp is bool:
            kwargs.update(nargs="?", const=True)
        help_text = f"{doc + ' ' if doc else ''}(default: {_show(default)})".replace("%", "%%")
        groups[title].add_argument(_flag(f.name), help=help_text, **kwargs)
        if "_" in f.name:  # --mask_ratio: the spelling of the field itself (wandb sweeps pass it)
            groups[title].add_argument("--" + f.name, help=argparse.SUPPRESS, **kwargs)
    return p


def parse_args(base: Any, argv: list[str] | None = None, description: str = "") -> Any:
    """Apply command-line overrides to ``base`` (a Config); ``--help`` lists every field with its value."""
    argv = list(sys.argv[1:] if argv is None else argv)
    spec = _config_arg(argv)
    from_file: set[str] = set()
    if spec is not None:
        loaded = load_config_file(base, spec)
        from_file = {f.name for f in dataclasses.fields(base) if getattr(loaded, f.name) != getattr(base, f.name)}
        base = loaded
    fields = [f.name for f in dataclasses.fields(base)]
    unset = object()  # argparse leaves attributes that already exist alone: what stays unset was not given
    ns = build_parser(base, description).parse_args(argv, namespace=argparse.Namespace(**{f: unset for f in fields}))
    given = {k: v for k, v in vars(ns).items() if k in fields and v is not unset}
    from .method_defaults import apply_method_defaults  # e.g. --method dino: DINO's betas, min lr, ...

    return apply_method_defaults(dataclasses.replace(base, **given), {*given, *from_file})
