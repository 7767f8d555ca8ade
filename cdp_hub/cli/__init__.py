"""The ``cdp-hub`` command line (click; rich for tables and progress bars on a terminal).

    cdp_hub/cli/__init__.py   main(): parse (click), load the settings, configure logging (cdp_hub/logs.py),
                              run the handler, turn errors into the exit codes below; ``completion``
    cdp_hub/cli/helpers.py    how a command is declared (command(), group(), attach()), print_json(),
                              print_table(), store_for()
    cdp_hub/cli/progress.py   progress bars (a terminal) or plain progress lines (cron, pipes)
    cdp_hub/cli/core.py       schema, plugins, migrate, run, serve, dlq, demo

The other commands live with the code they drive: a module named in :data:`COMMAND_MODULES` exposes
``commands`` (click commands and groups) and :func:`build_cli` attaches them. A handler is
``handler(args, settings) -> int`` (sync or async); :func:`parse` gives the handler a command line asks for
without running it (tests, the deployment manifests' check).

Flow of ``main(argv)``: parse (a usage error: exit 2; ``--help``/``--version``: 0) ─▶ load the settings and
register their secrets for redaction ─▶ configure logging ─▶ run the handler ─▶ its exit code, or:

    0    ok
    1    failure (the command ran and something failed: a check, a record, a send)
    2    usage: an unknown command or option, a bad option value, a missing argument
    3    configuration: the config file, an option value the hub refuses, a missing file or credential
         (every ConfigurationError)
    4    a backend is unreachable (Kafka, PostgreSQL, Redis)
    130  interrupted (Ctrl-C)
    141  stdout was closed by the reader (``cdp-hub ... | head -1``): nothing more is printed, no traceback

(``jobs run`` exits with 75 when another process is running the job.)
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from cdp_hub import __version__
from cdp_hub.cli.helpers import Args, Call, attach, command, global_options
from cdp_hub.config import Settings, load_settings
from cdp_hub.errors import CdpHubError, ConfigurationError
from cdp_hub.logs import configure_logging
from cdp_hub.outages import unavailable_dependency
from cdp_hub.redact import collect_secrets, redact, register_secrets

__all__ = [
    "COMMAND_MODULES",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_MISCONFIGURED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_cli",
    "exit_code",
    "main",
    "parse",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISCONFIGURED = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a Unix tool killed by the closed pipe

COMMAND_MODULES = (
    "cdp_hub.cli.core",          # schema, plugins, migrate, run, serve, dlq, demo
    "cdp_hub.cli.config",        # config show, config check
    "cdp_hub.triggers.cli",      # scenarios validate, init, list, simulate
    "cdp_hub.connector.cli",     # connectors list/spec/check/state, sync, ingest-file
    "cdp_hub.scaffold.cli",      # new connector, new channel
    "cdp_hub.resolver.cli",      # identity, profiles, import
    "cdp_hub.resolver.fuzzy.cli",  # identity suggest, identity suggestions
    "cdp_hub.segments.cli",      # segments, triggers run-daily
    "cdp_hub.delivery.cli",      # templates, channels send
    "cdp_hub.delivery.recommend_cli",  # recommend refresh/show
    "cdp_hub.jobs.cli",          # jobs list/run/history
    "cdp_hub.campaigns.cli",     # campaigns validate/list/preview/launch/pause/resume/cancel/status
    "cdp_hub.reports.cli",       # report scenarios (table, --json, --csv, --html)
)

PROG = "cdp-hub"
COMPLETE_VAR = "_CDP_HUB_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

_own_commands: list[click.Command] = []


@command(_own_commands, "completion", uses_settings=False,
         help="print the shell completion script for SHELL (bash, zsh or fish); e.g. in ~/.bashrc: "
              'eval "$(cdp-hub completion bash)"')
@click.argument("shell", type=click.Choice(SHELLS))
def cmd_completion(args: Args, settings: Settings) -> int:
    from click.shell_completion import get_completion_class

    completion = get_completion_class(args.shell)
    assert completion is not None  # click ships all three SHELLS
    print(completion(build_cli(), {}, PROG, COMPLETE_VAR).source())
    return EXIT_OK


def build_cli() -> click.Group:
    """The ``cdp-hub`` group with every command of :data:`COMMAND_MODULES` attached."""
    cli = click.Group(PROG, help="Customer Data Platform integration hub. Global options go before or after "
                                 "the command; exit codes: 0 ok, 1 failure, 2 usage, 3 configuration, "
                                 "4 backend unreachable.",
                      params=global_options(), no_args_is_help=True,
                      context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
    click.version_option(__version__, "--version", package_name="cdp-hub", prog_name=PROG,
                         message="%(prog)s %(version)s")(cli)
    attach(cli, _own_commands)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the CLI is not there; the rest works
                continue
            raise
        attach(cli, module.commands)
    return cli


def parse(argv: Sequence[str]) -> Call | int:
    """The :class:`Call` a command line asks for, or the exit code of one that is done once parsed
    (``--help``, ``--version``). Raises click's ``UsageError`` for a usage error."""
    result: Any = build_cli().main(list(argv), prog_name=PROG, complete_var=COMPLETE_VAR, standalone_mode=False)
    if isinstance(result, Call):
        return result
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's arguments) and return its exit code (see the
    module docstring); never raises ``SystemExit``."""
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a pipe holds the output in a buffer: a closed one fails here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`| head -1`). Whatever is still buffered for stdout can never be written:
        # point stdout at /dev/null so the interpreter's final flush does not fail a second time.
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str]) -> int:
    try:
        parsed = parse(argv)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as a usage error
        print(exc.ctx.get_help() if exc.ctx is not None else str(exc))
        return EXIT_USAGE
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:  # raised by click itself outside usage (its own exit code)
        exc.show()
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # click answered a shell-completion request (_CDP_HUB_COMPLETE) and exited
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    if isinstance(parsed, int):
        return parsed
    try:
        settings = load_settings(parsed.config) if parsed.uses_settings else Settings.model_construct()
        register_secrets(collect_secrets(settings))  # before anything can log or fail with one in its text
        if parsed.uses_settings:
            configure_logging(parsed.log_level or settings.log_level, parsed.log_format or settings.log_format)
        # The handler sees the global options in force too: a command that starts ``cdp-hub`` again
        # (``run --processes``) passes them on.
        parsed.args.cli_globals = {"config": parsed.config, "log_level": parsed.log_level,
                                   "log_format": parsed.log_format}
        result = parsed.handler(parsed.args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(_awaited(result))
        return int(result or 0)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (CdpHubError, OSError) as exc:  # OSError: a missing file, a refused connection: say which
        return _error(exc, exit_code(exc))
    except Exception as exc:
        if unavailable_dependency(exc) is None:
            raise  # a bug: its traceback is what helps
        return _error(exc, EXIT_UNREACHABLE)


def exit_code(exc: BaseException) -> int:
    """The exit code of a command that failed with ``exc``: 3 for a configuration error (a wrong password
    too, although the server answered), 4 for a backend that is not there (the store and hot state say so as
    a ConfigurationError raised from the client's error), else 1."""
    if _credentials_refused(exc):
        return EXIT_MISCONFIGURED
    if unavailable_dependency(exc) is not None:
        return EXIT_UNREACHABLE
    return EXIT_MISCONFIGURED if isinstance(exc, ConfigurationError) else EXIT_FAILURE


# The clients' errors for a server that answered and refused the credentials (redis-py's AuthenticationError
# is a ConnectionError, asyncpg's InvalidPasswordError an access-rule error: both otherwise look like an outage).
_CREDENTIAL_ERRORS = frozenset({"InvalidPasswordError", "AuthenticationError", "AuthenticationWrongNumberOfArgsError",
                                "SaslAuthenticationFailedError"})


def _credentials_refused(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(16):  # the chain of causes, bounded
        if current is None:
            return False
        if {c.__name__ for c in type(current).__mro__} & _CREDENTIAL_ERRORS:
            return True
        current = current.__cause__ or current.__context__
    return False


async def _awaited(result: Any) -> Any:
    return await result


def _error(exc: BaseException, code: int) -> int:
    dependency = unavailable_dependency(exc) if code == EXIT_UNREACHABLE else None
    text = redact(str(exc)) or type(exc).__name__
    prefix = f"{dependency} unreachable: " if dependency and dependency not in text.lower() else ""
    print(f"{PROG}: error: {prefix}{text}", file=sys.stderr)
    return code


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stdout)
        pass
