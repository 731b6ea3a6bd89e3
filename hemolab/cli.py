"""The ``hemolab`` command line.

Each sub-command lives in its own module in :mod:`hemolab.commands` and defines

* ``HELP``: a one-line description,
* ``add_arguments(parser: argparse.ArgumentParser) -> None``,
* ``run(args: argparse.Namespace) -> int``.

Modules are discovered automatically, so adding a command means adding one file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import hemolab.commands
from hemolab import __version__
from hemolab.errors import HemolabError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(hemolab.commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        yield info.name.replace("_", "-"), importlib.import_module(f"hemolab.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="hemolab",
        description="Segment and measure brain haemorrhage in non-contrast head CT (CNN-DS and Patel 3D CNN).",
    )
    parser.add_argument("--version", action="version", version=f"hemolab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__ or module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the sub-command. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except HemolabError as exc:
        print(f"hemolab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
