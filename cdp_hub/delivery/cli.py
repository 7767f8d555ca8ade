"""Delivery commands: preview templates, list them.

    cdp-hub templates render welcome --profile 6f1c...    # a profile from the database
    cdp-hub templates render welcome --profile anna.json --kind sms --locale en
    cdp-hub templates list

(``cdp-hub new channel NAME`` is in :mod:`cdp_hub.scaffold.cli`.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import get_args

from cdp_hub.channel.base import ChannelKind
from cdp_hub.cli.helpers import SubParsers, command_group, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.messages import MessageIntent

from .profiles import ProfileSnapshot, load_profiles
from .rendering import RenderedMessage, TemplateRenderer
from .stage import message_locale, template_context

__all__ = ["register"]

_KINDS: tuple[str, ...] = get_args(ChannelKind)


def register(sub: SubParsers) -> None:
    tsub = command_group(sub, "templates", "preview and list message templates", metavar="ACTION")
    render = tsub.add_parser("render", help="render a template for a profile, as delivery would")
    render.add_argument("template", help="template name (a folder: welcome, order_confirmation, ...)")
    render.add_argument("--profile", required=True,
                        help="a profile id (read from the database) or a JSON file of Golden Record traits")
    render.add_argument("--kind", choices=_KINDS, default="email", help="channel kind (default: email)")
    render.add_argument("--locale", help="override the profile's locale (ru, en_US, ...)")
    render.add_argument("--event", type=Path, help="JSON file: the trigger event the template may use")
    render.add_argument("--vars", default="{}", help="JSON object: scenario variables")
    render.add_argument("--templates-dir", type=Path, help="default: templates_dir from the configuration")
    render.add_argument("--json", action="store_true", help="print the parts as JSON")
    render.set_defaults(handler=cmd_templates_render)
    listing = tsub.add_parser("list", help="templates available (the deployment's, then the built-ins)")
    listing.add_argument("--templates-dir", type=Path)
    listing.set_defaults(handler=cmd_templates_list)


# -- templates ---------------------------------------------------------------------------------------------

def _profile(settings: Settings, ref: str) -> ProfileSnapshot:
    path = Path(ref)
    if path.suffix == ".json" or path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"--profile {ref}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"--profile {ref}: expected a JSON object of traits")
        return ProfileSnapshot(str(data.get("profile_id") or uuid.UUID(int=0)), data)
    try:
        uuid.UUID(ref)
    except ValueError:
        raise ConfigurationError(f"--profile {ref!r} is neither a profile id (UUID) nor a .json file") from None
    found = asyncio.run(_load_profile(settings, ref))
    if found is None:
        raise ConfigurationError(f"no profile {ref} in the database")
    return found


async def _load_profile(settings: Settings, profile_id: str) -> ProfileSnapshot | None:
    from cdp_hub.store import ProfileRepository

    async with store_for(settings, pool_size=1) as store:
        return (await load_profiles(ProfileRepository(store), [profile_id])).get(profile_id)


def cmd_templates_render(args: argparse.Namespace, settings: Settings) -> int:
    try:
        variables = json.loads(args.vars)
        event = json.loads(args.event.read_text(encoding="utf-8")) if args.event else None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"--vars/--event: {exc}") from None
    if not isinstance(variables, dict) or (event is not None and not isinstance(event, dict)):
        raise ConfigurationError("--vars and --event must be JSON objects")
    profile = _profile(settings, args.profile)
    intent = MessageIntent(message_id="preview", profile_id=profile.profile_id, scenario="preview",
                           channel=args.kind, template=args.template, locale=args.locale,
                           trigger_event=event, vars=variables)
    renderer = TemplateRenderer(args.templates_dir or settings.templates_dir,
                                default_locale=settings.default_locale, default_currency=settings.default_currency)
    unsubscribe = settings.unsubscribe_url.format(message_id="preview", profile_id=profile.profile_id,
                                                  channel=args.kind) if settings.unsubscribe_url else None
    locale = message_locale(intent, profile, settings.default_locale)
    timezone = profile.traits.get("timezone")
    rendered = renderer.render(args.template, args.kind, template_context(intent, profile, args.kind, unsubscribe),
                               locale=locale, timezone=timezone if isinstance(timezone, str) else None)
    _print(rendered, locale, as_json=args.json)
    return 0


def _print(rendered: RenderedMessage, locale: str, *, as_json: bool) -> None:
    parts = {"template_file": rendered.template_file, "locale": locale, "subject": rendered.subject,
             "title": rendered.title, "text": rendered.text, "html": rendered.html, "url": rendered.url}
    if as_json:
        print_json({k: v for k, v in parts.items() if v is not None})
        return
    print(f"# {rendered.template_file} ({locale})")
    for key in ("subject", "title", "url"):
        if parts[key] is not None:
            print(f"{key.capitalize()}: {parts[key]}")
    print("--- text ---")
    print(rendered.text)
    if rendered.html is not None:
        print("--- html ---")
        print(rendered.html)


def cmd_templates_list(args: argparse.Namespace, settings: Settings) -> int:
    renderer = TemplateRenderer(args.templates_dir or settings.templates_dir)
    for name, variants in renderer.list_templates().items():
        print(f"{name}: {', '.join(variants)}")
    return 0
