"""Plugin packages whose tests pass as generated: ``scaffold("connector" | "channel", name, dest)``.

``cdp-hub new connector acme_shop`` and ``cdp-hub new channel acme_sms`` (:mod:`cdp_hub.scaffold.cli`) write

    cdp-hub-acme-shop/                    cdp-hub-acme-sms/
      pyproject.toml                        pyproject.toml                the entry point -> cdp_hub_<name>
      cdp_hub_acme_shop.py                  cdp_hub_acme_sms/__init__.py  config model, plugin class, hook
      tests/test_acme_shop.py               tests/test_acme_sms.py        the conformance kit of cdp_hub.testing
      README.md                             README.md                     install, test, configure

The generated connector reads a ``members`` stream (page numbers, incremental by ``updated_at``) and maps each
member to ``customer.updated``; the channel sends through a JSON API and reads its delivery callbacks. Both
derive from the SDK's HTTP base classes (``HttpConnector``, ``HttpChannel``): a working start to edit.

Each kind is a folder of ``templates/``: every ``*.tmpl`` file below it is written to the same relative path
without ``.tmpl``. Placeholders in a file's path are ``{name}``, in its text ``$name`` (:class:`string.Template`):

    name        the plugin name (:func:`cdp_hub.plugins.validate_plugin_name`)   acme_shop
    dist        the distribution name after ``cdp-hub-``                         acme-shop
    module      the Python module or package                                     cdp_hub_acme_shop
    class_name  the stem of the class names                                      AcmeShop
    title       for people                                                       Acme Shop
    channel_kind, address_kind, recipient      channels only: kind, identity kind, a sample address

The templates are plain substitutions with no logic, so :class:`string.Template` is enough: it leaves the
braces of Python and TOML alone, ``substitute()`` fails on a misspelt placeholder, and the files come from
this package, not from users, so a sandbox (Jinja2's) would guard nothing.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Literal, get_args

from cdp_hub.channel.base import ChannelKind
from cdp_hub.errors import ConfigurationError
from cdp_hub.plugins import validate_plugin_name

__all__ = ["CHANNEL_KINDS", "KINDS", "PluginKind", "scaffold"]

PluginKind = Literal["connector", "channel"]
KINDS: tuple[PluginKind, ...] = get_args(PluginKind)
CHANNEL_KINDS: tuple[ChannelKind, ...] = get_args(ChannelKind)

# The identity kind a channel of each kind sends to, and a sample address of it for the generated test.
_ADDRESS_KIND = {"email": "email", "sms": "phone", "push": "push_token", "messenger": "messenger_id",
                 "webhook": "push_token", "other": "email"}
_SAMPLE_RECIPIENT = {"email": "anna@example.com", "phone": "+79161234567", "push_token": "device-token-1"}


def scaffold(kind: PluginKind, name: str, dest: Path, *, force: bool = False, channel_kind: str = "sms",
             address_kind: str | None = None) -> Path:
    """Write the plugin package ``cdp-hub-<name>`` of ``kind`` under ``dest``; return its folder.

    A folder that exists and is not empty is refused unless ``force`` (then the generated files are written
    over). ``channel_kind`` and ``address_kind`` (default: from ``channel_kind``) are for channels.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"cannot scaffold a {kind!r}; one of {', '.join(KINDS)}")
    validate_plugin_name(name, kind=kind)
    values = _values(name)
    if kind == "channel":
        if channel_kind not in CHANNEL_KINDS:
            raise ConfigurationError(f"kind {channel_kind!r}: one of {', '.join(CHANNEL_KINDS)}")
        address = address_kind or _ADDRESS_KIND[channel_kind]
        values.update(channel_kind=channel_kind, address_kind=address,
                      recipient=_SAMPLE_RECIPIENT.get(address, "recipient-1"))
    root = dest / f"cdp-hub-{values['dist']}"
    if root.exists() and any(root.iterdir()) and not force:
        raise ConfigurationError(f"{root} exists and is not empty; choose another --dir or pass --force")
    for relative, template in _templates(resources.files(__name__) / "templates" / kind):
        path = root / relative.with_suffix("").as_posix().format_map(values)
        text = string.Template(template.read_text(encoding="utf-8")).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _values(name: str) -> dict[str, str]:
    parts = [part for part in name.split("_") if part]
    return {"name": name, "dist": name.replace("_", "-"), "module": f"cdp_hub_{name}",
            "class_name": "".join(part.capitalize() for part in parts),
            "title": " ".join(part.capitalize() for part in parts)}


def _templates(folder: Traversable, relative: PurePosixPath = PurePosixPath()) -> Iterator[
        tuple[PurePosixPath, Traversable]]:
    """Every ``*.tmpl`` below ``folder``, with its path relative to it."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _templates(entry, relative / entry.name)
        elif entry.name.endswith(".tmpl"):
            yield relative / entry.name, entry
