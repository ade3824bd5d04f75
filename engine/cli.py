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


def _select(args: argparse.Namespace, *, embedded_by_default: bool = False):
    """The entries named on the command line; with none named, all of them, or (fetch and
    verify) only the embedded groups: production models are fetched when asked for by group."""
    from engine import models

    try:
        default = models.EMBEDDED_GROUPS if embedded_by_default else None
        return models.entries(args.names, args.group, default_groups=default)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _models_fetch(args: argparse.Namespace) -> int:
    from engine import models

    selected = _select(args, embedded_by_default=True)
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
                _human_size(entry.size) if entry.size else "unknown",
                licence,
                "yes" if entry.commercial_use else "NO",
                ("yes" if models.is_present(entry) else "no") + ("" if entry.pinned else " (unpinned sha256)"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nModels folder: {models.models_dir()}  (PRESENT checks sizes; `models verify` hashes)")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from engine import models

    selected = _select(args, embedded_by_default=True)
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
        description=(
            "Download the selected model files into the models folder: by default the embedded "
            "groups; production groups (swap, enhance, masks) only when named with --group."
        ),
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


@command
def _register_swap(subparsers) -> None:
    parser = subparsers.add_parser(
        "swap",
        help="swap a generated persona onto a photo or video",
        description="Put the face in --source (a face SafeFace generated) onto the chosen faces of --target.",
    )
    parser.add_argument("--source", required=True, help="persona image (PNG/JPEG/WebP), or seed:N to generate one")
    parser.add_argument("--target", required=True, help="photo (JPEG/PNG/WebP) or video (MP4/MOV/WebM/GIF)")
    parser.add_argument("--out", required=True, help="output file (.jpg/.png/.webp for photos, .mp4 for videos)")
    parser.add_argument("--faces", default="all", help="all | largest | index:N | reference:IMAGE | except-reference:IMAGE")
    parser.add_argument("--bystanders", default="keep", choices=("keep", "blur", "replace"))
    parser.add_argument("--bystander-seed", type=int, default=7, help="persona seed for --bystanders replace")
    parser.add_argument("--audio", default="keep", help="videos: keep | drop | path to a replacement track")
    parser.add_argument("--json", action="store_true", help="print the per-face report as JSON")
    parser.set_defaults(func=_swap)


def _persona_from(spec: str, analyzer):
    from engine.generate.stylegan import generate_face
    from engine.media.image import load_image
    from engine.swap.pipeline import prepare_persona

    if spec.startswith("seed:"):
        return prepare_persona(generate_face(int(spec[5:])), analyzer)
    return prepare_persona(load_image(spec).pixels, analyzer)


def _swap(args) -> int:
    import json
    from pathlib import Path

    from engine.faces import FaceAnalyzer
    from engine.media.image import load_image, save_image, sniff_image_format
    from engine.swap.pipeline import ImageSwapOptions, swap_image
    from engine.swap.video import VideoSwapOptions, swap_video

    analyzer = FaceAnalyzer.default()
    persona = _persona_from(args.source, analyzer)
    mode, reference = args.faces, None
    if ":" in mode and mode.split(":", 1)[0] in ("reference", "except-reference"):
        mode, ref_path = mode.split(":", 1)
        ref = load_image(ref_path).pixels
        ref_faces = analyzer.analyze(ref)
        if not ref_faces:
            from engine.errors import NoFaceFound

            raise NoFaceFound(f"No face was found in the reference image {ref_path}.")
        reference = analyzer.embed(ref, max(ref_faces, key=lambda f: f.area))
    options = ImageSwapOptions(faces=mode, reference_embedding=reference, bystanders=args.bystanders)
    bystander = _persona_from(f"seed:{args.bystander_seed}", analyzer) if args.bystanders == "replace" else None
    with open(args.target, "rb") as handle:
        head = handle.read(64)
    if sniff_image_format(head) in ("jpeg", "png", "webp"):
        image = load_image(args.target).pixels
        out, reports = swap_image(image, persona, options, analyzer=analyzer, bystander_persona=bystander)
        save_image(out, args.out)
        summary = [r.as_dict() for r in reports]
    else:
        report = swap_video(
            args.target, args.out, persona, VideoSwapOptions(image=options, audio=args.audio),
            analyzer=analyzer, bystander_persona=bystander,
            progress=lambda done, total: print(f"\r{done}/{total} frames", end="", file=sys.stderr) or True,
        )
        print(file=sys.stderr)
        summary = {"frames": report.frames, "fps": round(report.fps, 1), "tracks": report.tracks}
    if args.json:
        print(json.dumps(summary, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v), indent=2))
    else:
        faces = summary if isinstance(summary, list) else summary["tracks"]
        unprotected = [f for f in faces if f.get("protected") is False]
        print(f"wrote {Path(args.out)}: {len(faces)} face(s)" + (f", {len(unprotected)} NOT protected" if unprotected else ""))
    return 0
