"""Delivery commands: preview templates, list them, send a test message through a channel instance.

    cdp-hub templates render welcome --profile 6f1c...    # a profile from the database
    cdp-hub templates render welcome --profile anna.json --kind sms --locale en
    cdp-hub templates list
    cdp-hub channels send sms --to +79161234567 --template welcome [--profile anna.json] [--json]
        renders the template for the instance's kind (as delivery would) and sends it through the configured
        instance, once, now: no consent check, no send log, no caps (an operator's test of the provider set-up);
        exit 1 when the provider refuses it

(``cdp-hub new channel NAME`` is in :mod:`cdp_hub.scaffold.cli`.)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any, get_args

import click

from cdp_hub.channel.base import ChannelKind, OutboundMessage, Receipt
from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.messages import MessageIntent

from .profiles import ProfileSnapshot, load_profiles
from .rendering import RenderedMessage, TemplateRenderer
from .stage import message_locale, template_context

__all__ = ["commands"]

_KINDS: tuple[str, ...] = get_args(ChannelKind)


PATH = click.Path(path_type=Path)

commands: list[click.Command] = []
templates = group(commands, "templates", "preview and list message templates")
channels = group(commands, "channels", "channel instances: send a test message")
PROFILE_HELP = "a profile id (read from the database) or a JSON file of Golden Record traits"
VARS_HELP = "JSON object: scenario variables"


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


def _vars_and_event(args: Args) -> tuple[dict[str, Any], dict[str, Any] | None]:
    try:
        variables = json.loads(args.vars)
        event = json.loads(args.event.read_text(encoding="utf-8")) if args.event else None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"--vars/--event: {exc}") from None
    if not isinstance(variables, dict) or (event is not None and not isinstance(event, dict)):
        raise ConfigurationError("--vars and --event must be JSON objects")
    return variables, event


@command(templates, "render", help="render template TEMPLATE (a folder: welcome, order_confirmation, ...) for a "
                                    "profile, as delivery would")
@click.argument("template")
@click.option("--profile", required=True, help=PROFILE_HELP)
@click.option("--kind", type=click.Choice(_KINDS), default="email", show_default=True, help="channel kind")
@click.option("--locale", help="override the profile's locale (ru, en_US, ...)")
@click.option("--event", type=PATH, help="JSON file: the trigger event the template may use")
@click.option("--vars", default="{}", help=VARS_HELP)
@click.option("--templates-dir", type=PATH, help="default: templates_dir from the configuration")
@json_option("print the parts as JSON")
def cmd_templates_render(args: Args, settings: Settings) -> int:
    variables, event = _vars_and_event(args)
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


@command(templates, "list", help="templates available (the deployment's, then the built-ins)")
@click.option("--templates-dir", type=PATH, help="default: templates_dir from the configuration")
@json_option("print the templates and their variants as JSON")
def cmd_templates_list(args: Args, settings: Settings) -> int:
    renderer = TemplateRenderer(args.templates_dir or settings.templates_dir)
    if args.json:
        print_json({name: list(variants) for name, variants in renderer.list_templates().items()})
        return 0
    for name, variants in renderer.list_templates().items():
        print(f"{name}: {', '.join(variants)}")
    return 0


# -- channels send -----------------------------------------------------------------------------------------

@command(channels, "send", help="send a test message through channel INSTANCE now: the template rendered for "
                               "the instance's kind, to one address; no consent check, send log or caps (exit 1 "
                               "when the provider refuses it)")
@click.argument("instance")
@click.option("--to", required=True, help="recipient address: e-mail, E.164 phone, push token, chat id")
@click.option("--template", required=True, help="template name (a folder: welcome, order_confirmation, ...)")
@click.option("--profile", help=PROFILE_HELP + " (default: no traits)")
@click.option("--locale", help="the message's locale (default: the profile's, else default_locale)")
@click.option("--event", type=PATH, help="JSON file: the trigger event the template may use")
@click.option("--vars", default="{}", help=VARS_HELP)
@json_option("print the provider's receipt as JSON")
def cmd_channels_send(args: Args, settings: Settings) -> int:
    variables, event = _vars_and_event(args)
    profile = _profile(settings, args.profile) if args.profile else ProfileSnapshot(str(uuid.UUID(int=0)), {})
    receipt = asyncio.run(_send_test(settings, args, profile, variables, event))
    if args.json:
        print_json(receipt.model_dump(mode="json"))
    else:
        print(f"{args.instance}: {receipt.status}"
              + (f" (provider id {receipt.provider_message_id})" if receipt.provider_message_id else "")
              + (f": {receipt.reason}" if receipt.reason else ""))
    return 1 if receipt.status == "failed" else 0


async def _send_test(settings: Settings, args: Args, profile: ProfileSnapshot, variables: dict[str, Any],
                     event: dict[str, Any] | None) -> Receipt:
    from cdp_hub.hub import Hub

    hub = Hub(settings)  # not started: a test send needs the channel and the HTTP client, no bus or database
    try:
        channel = await hub.channel(args.instance)
        try:
            message_id = f"test-{uuid.uuid4()}"
            intent = MessageIntent(message_id=message_id, profile_id=profile.profile_id, scenario="test-send",
                                   channel=args.instance, template=args.template, locale=args.locale,
                                   trigger_event=event, vars=variables)
            renderer = TemplateRenderer(settings.templates_dir, default_locale=settings.default_locale,
                                        default_currency=settings.default_currency)
            locale = message_locale(intent, profile, settings.default_locale)
            timezone = profile.traits.get("timezone")
            rendered = renderer.render(args.template, channel.kind,
                                       template_context(intent, profile, args.instance),
                                       locale=locale, timezone=timezone if isinstance(timezone, str) else None)
            message = OutboundMessage(message_id=message_id, channel=args.instance, profile_id=profile.profile_id,
                                      to=args.to, subject=rendered.subject, text=rendered.text, html=rendered.html,
                                      scenario="test-send", template=args.template, locale=locale)
            return await channel.send(message)
        finally:
            await channel.stop()
    finally:
        await hub.http.aclose()
