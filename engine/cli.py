"""Command line of the engine: ``python -m engine COMMAND ...``.

Commands register themselves with :func:`command`: a function that receives the top-level
argparse subparsers action, adds its parser(s) and sets ``func`` (``args -> int`` exit status)
with ``set_defaults``. To add one (e.g. ``swap``), write::

    @command
    def _register_swap(subparsers):
        parser = subparsers.add_parser("swap", help="...")
        parser.add_argument(...)
        parser.set_defaults(func=_swap)

Import heavy modules inside the handler, not at the top of this file, so ``models`` stays fast.
An :class:`~engine.errors.EngineError` raised by a handler is printed as one line on stderr
(no traceback) and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from engine.errors import EngineError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

_REGISTRARS: list[Registrar] = []


def command(register: Registrar) -> Registrar:
    """Decorator: add a top-level subcommand (see the module docstring)."""
    _REGISTRARS.append(register)
    return register


class UsageError(Exception):
    """Bad arguments found by a handler: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser. ``parser.subparsers`` is the top-level subparsers action, so callers can
    add commands to a parser they built (``build_parser().subparsers.add_parser(...)``)."""
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="SafeFace engine: model files and offline tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.subparsers = subparsers  # type: ignore[attr-defined]
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A command group given without its subcommand prints that group's help.
        (getattr(args, "group_parser", None) or parser).print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _human_size(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.0f} kB"


def _select(args: argparse.Namespace):
    from engine import models

    try:
        return models.entries(args.names, args.group)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _models_fetch(args: argparse.Namespace) -> int:
    from engine import models

    selected = _select(args)
    print(f"Fetching {len(selected)} model file(s) into {models.models_dir()}")
    noncommercial = [e.name for e in selected if not e.commercial_use]
    if noncommercial:
        print(f"  note: {', '.join(noncommercial)}: NON-commercial licence (see `models list`)")
    result = models.fetch([e.name for e in selected], progress=print)
    print(
        f"Done in {result.seconds:.1f} s: {len(result.fetched)} fetched, "
        f"{len(result.present)} already present."
    )
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from engine import models

    selected = _select(args)
    rows = [("NAME", "GROUP", "SIZE", "LICENSE", "COMMERCIAL", "PRESENT")]
    for entry in selected:
        licence = entry.license if args.full else entry.license.split(":")[0].split(" (")[0]
        rows.append(
            (
                entry.name,
                entry.group,
                _human_size(entry.size),
                licence,
                "yes" if entry.commercial_use else "NO",
                "yes" if models.is_present(entry) else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nModels folder: {models.models_dir()}  (PRESENT checks sizes; `models verify` hashes)")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from engine import models

    selected = _select(args)
    checks = models.verify([e.name for e in selected])
    width = max((len(c.entry.name) for c in checks), default=0)
    for check in checks:
        print(f"{check.status:<8} {check.entry.name:<{width}}  {check.detail}")
    bad = [c for c in checks if not c.ok]
    if bad:
        print(
            f"error: {len(bad)} model file(s) missing or corrupt in {models.models_dir()}; "
            f"fix with: {models.FETCH_HINT}",
            file=sys.stderr,
        )
        return 1
    print(f"All {len(checks)} model file(s) ok in {models.models_dir()}")
    return 0


@command
def _register_models(subparsers) -> None:
    from engine.models import GROUPS  # light: standard library only

    parser = subparsers.add_parser(
        "models", help="list, fetch and verify model files", description="Model files."
    )
    parser.set_defaults(group_parser=parser)
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--group", action="append", choices=GROUPS, help="only this group (repeatable)"
        )
        p.add_argument("names", nargs="*", metavar="NAME", help="only these model files")

    fetch = sub.add_parser(
        "fetch",
        help="download missing model files (idempotent, resumable)",
        description="Download the selected model files (all by default) into the models folder.",
    )
    selection(fetch)
    fetch.set_defaults(func=_models_fetch)

    listing = sub.add_parser("list", help="table of model files, licences and presence")
    selection(listing)
    listing.add_argument("--full", action="store_true", help="show full licence text")
    listing.set_defaults(func=_models_list)

    check = sub.add_parser("verify", help="hash every model file (exit 1 if missing/corrupt)")
    selection(check)
    check.set_defaults(func=_models_verify)
