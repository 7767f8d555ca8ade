"""``cdp-hub new connector NAME``: a standalone connector plugin package whose tests pass as generated.

    cdp-hub-acme-shop/
      pyproject.toml            the cdp_hub.connectors entry point -> cdp_hub_acme_shop
      cdp_hub_acme_shop.py      config model, one REST stream, normalize(), the registration hook
      tests/test_acme_shop.py   ConnectorTests from the conformance kit, with sample records
      README.md

The generated connector reads a ``members`` stream (page numbers, incremental by ``updated_at``) and maps
each member to ``customer.updated``: a working start to edit, not a stub.
"""

from __future__ import annotations

from pathlib import Path

from cdp_hub.errors import ConfigurationError
from cdp_hub.plugins import validate_plugin_name

__all__ = ["scaffold_connector"]

_PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cdp-hub-{dist}"
version = "0.1.0"
description = "{title} connector for cdp-hub"
requires-python = ">=3.11"
dependencies = ["cdp-hub"]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-asyncio>=0.23", "respx>=0.21"]

[project.entry-points."cdp_hub.connectors"]
{name} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
testpaths = ["tests"]
'''

_MODULE = '''"""{title} connector for cdp-hub: members of the {title} API as ``customer.updated`` events.

Installed, it registers through the ``cdp_hub.connectors`` entry point; configure an instance with::

    [connectors.{name}]
    type = "{name}"
    config = {{ base_url = "https://api.example.com", auth = {{ type = "bearer", token = "..." }} }}

then ``cdp-hub connectors check {name}`` and ``cdp-hub sync {name}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from cdp_hub import hookimpl
from cdp_hub.connector.base import ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import add_identity, parse_datetime, require, text
from cdp_hub.connector.pagination import PageNumberPaginator
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream

__all__ = ["{cls}Config", "{cls}Connector", "cdp_hub_register_connectors"]


class {cls}Config(HttpConnectorConfig):
    """Options of the {title} connector (base_url, auth, page_size, ... come from HttpConnectorConfig)."""

    base_url: str = Field("https://api.example.com", description="the {title} API's base URL")


class Members(RestStream):
    """``GET /v1/members?updated_since=...&page=N&per_page=M`` -> ``{{"data": [...], "meta": {{...}}}}``."""

    name = "members"
    path = "/v1/members"
    records_path = "data"
    cursor_field = "updated_at"
    cursor_param = "updated_since"
    paginator = PageNumberPaginator(page_param="page", size_param="per_page", total_pages_path="meta.total_pages")


class {cls}Connector(HttpConnector):
    """{title}: members as customer profiles."""

    name: ClassVar[str] = "{name}"
    title: ClassVar[str] = "{title}"
    config_model: ClassVar[type[ConnectorConfig]] = {cls}Config
    streams = (Members,)

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        member_id = text(require(record, "id"))
        updated = require(record, "updated_at")
        identities: list[dict[str, str]] = []
        add_identity(identities, "{name}_id", member_id)
        add_identity(identities, "email", record.get("email"))
        add_identity(identities, "phone", record.get("phone"))
        traits = {{k: v for k, v in {{"first_name": text(record.get("first_name")),
                                    "last_name": text(record.get("last_name"))}}.items() if v}}
        return [{{
            "type": "customer.updated",
            "source_record_id": f"{{member_id}}@{{updated}}",
            "occurred_at": parse_datetime(updated, field="updated_at"),
            "identities": identities,
            "traits": traits,
        }}]


@hookimpl
def cdp_hub_register_connectors(register: Callable[[type[Any]], None]) -> None:
    register({cls}Connector)
'''

_TEST = '''"""The {title} connector passes cdp-hub's connector conformance kit."""

from __future__ import annotations

from typing import Any

from cdp_hub.testing import ConnectorTests
from {module} import {cls}Connector


def member(n: int, **extra: Any) -> dict[str, Any]:
    return {{"id": str(n), "email": f"member{{n}}@example.com", "phone": f"+7 916 000-00-{{n:02d}}",
            "first_name": "Anna", "updated_at": f"2026-01-{{n:02d}}T10:00:00Z", **extra}}


class Test{cls}Connector(ConnectorTests):
    connector_class = {cls}Connector
    config = {{"base_url": "https://api.{dist}.test", "auth": {{"type": "bearer", "token": "test-token"}}}}
    records = [member(n) for n in range(1, 6)]
    broken_record = member(9, email="not-an-email")
'''

_README = '''# cdp-hub-{dist}

{title} connector for [cdp-hub](https://github.com/cdp-hub/cdp-hub).

    pip install -e '.[dev]'
    pytest                      # the conformance kit: config, check, paging, cursor resume, DLQ, webhooks
    cdp-hub connectors spec {name}
'''


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def scaffold_connector(name: str, directory: Path, *, force: bool = False) -> Path:
    """Write the package for connector ``name`` under ``directory``; return the package folder."""
    validate_plugin_name(name, kind="connector")
    dist = name.replace("_", "-")
    root = directory / f"cdp-hub-{dist}"
    if root.exists() and any(root.iterdir()) and not force:
        raise ConfigurationError(f"{root} exists and is not empty; choose another --dir or pass --force")
    values = {"name": name, "dist": dist, "module": f"cdp_hub_{name}", "cls": _class_name(name),
              "title": name.replace("_", " ").title()}
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(_PYPROJECT.format(**values), encoding="utf-8")
    (root / f"{values['module']}.py").write_text(_MODULE.format(**values), encoding="utf-8")
    (root / "tests" / f"test_{name}.py").write_text(_TEST.format(**values), encoding="utf-8")
    (root / "README.md").write_text(_README.format(**values), encoding="utf-8")
    return root
