"""Ready scenario catalogues: scenario files, their templates and segments, written out for a retailer to edit.

    cdp-hub scenarios init --catalogue retail DIR
        DIR/scenarios/*.yaml    scenarios (a file holds one, or a list: the welcome series, the win-back steps)
        DIR/templates/NAME/*.j2 e-mail, SMS, push and messenger templates in English (kind.j2) and Russian (kind.ru.j2)
        DIR/segments/*.yaml     the segments the segment-driven scenarios start from (win-back, tier at risk, ...)

A catalogue is package data (``catalogues/<name>/``); nothing here runs it. The deployment points
``scenarios_dir``, ``templates_dir`` and ``segments_dir`` at the three folders (docs/scenario-catalogue.md).
A scenario with a built-in's id (``welcome``, ``abandoned_cart``, ...) replaces the built-in.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from cdp_hub.errors import ConfigurationError

__all__ = ["PARTS", "catalogue_files", "catalogue_names", "write_catalogue"]

PARTS = ("scenarios", "templates", "segments")
"""The folders of a catalogue, in the order a deployment configures them."""


def catalogue_names() -> list[str]:
    """The catalogues this installation ships (``retail``)."""
    root = resources.files(__name__)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def catalogue_files(name: str) -> dict[str, str]:
    """Every file of catalogue ``name``: its path relative to the catalogue (``scenarios/birthday.yaml``)
    and its text."""
    if name not in catalogue_names():
        raise ConfigurationError(f"no scenario catalogue {name!r}; catalogues: {', '.join(catalogue_names())}")
    out: dict[str, str] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            elif child.name.endswith((".yaml", ".j2")):
                out[rel] = child.read_text(encoding="utf-8")

    walk(resources.files(__name__).joinpath(name), "")
    return out


def write_catalogue(name: str, target: Path, *, overwrite: bool = False) -> list[Path]:
    """Write catalogue ``name`` under ``target``; refuses to replace a file the retailer may have edited
    unless ``overwrite``. Returns the files written."""
    files = catalogue_files(name)
    existing = [rel for rel in files if (target / rel).exists()]
    if existing and not overwrite:
        raise ConfigurationError(f"{target}: {len(existing)} catalogue file(s) exist already (e.g. {existing[0]}); "
                                 "use --force to overwrite them")
    written = []
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
