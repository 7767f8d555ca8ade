"""The command line's surface, the same for every command: help for every option, --version, global options
before or after the command, --json that parses, the documented exit codes, broken pipes, completion,
progress, and the test-send command."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cdp_hub import __version__
from cdp_hub.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_MISCONFIGURED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    build_cli,
    exit_code,
    main,
    parse,
)
from cdp_hub.cli.helpers import Call
from cdp_hub.cli.progress import plain_line, progress_reporter
from cdp_hub.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``cdp-hub`` subprocess: this checkout's cdp_hub, whatever the working folder."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def cdp_hub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdp_hub.cli", *args], capture_output=True, text=True,
                          env=_env(env), timeout=120)


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


@pytest.fixture
def no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No config file and no CDP_HUB_* variables: the defaults, an embedded data dir in tmp_path."""
    for name in [n for n in os.environ if n.startswith("CDP_HUB_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CDP_HUB_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


# -- help --------------------------------------------------------------------------------------------------


def test_every_command_and_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    cli = build_cli()
    seen = 0
    for path, cmd in _commands(cli):
        assert (cmd.help or "").strip(), f"cdp-hub {' '.join(path)} has no help text"
        assert main([*path, "--help"]) == 0, path
        text = capsys.readouterr().out
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            assert (param.help or "").strip(), f"cdp-hub {' '.join(path)} {param.opts[0]} has no help text"
            assert param.opts[0] in text, f"{param.opts[0]} missing from the help of cdp-hub {' '.join(path)}"
            seen += 1
    assert seen > 150  # every command, and the global options on each
    for option in cli.params:
        assert isinstance(option, click.Option) and (option.help or "").strip(), option.name


def test_the_commands_users_rely_on_are_all_there() -> None:
    names = {" ".join(path) for path, _ in _commands(build_cli())}
    assert {"run", "serve", "migrate", "plugins", "schema export", "schema check", "dlq list", "dlq replay",
            "dlq purge", "demo", "config show", "config check", "scenarios validate", "scenarios init",
            "scenarios list", "scenarios simulate", "connectors list", "connectors spec", "connectors check",
            "connectors state", "sync", "ingest-file", "new connector", "new channel", "profiles show",
            "profiles merge", "profiles unmerge", "identity dry-run", "identity conflicts", "identity suggest",
            "identity suggestions", "import", "segments list", "segments validate", "segments schema",
            "segments sql", "segments recompute", "segments members", "triggers run-daily", "templates render",
            "templates list", "channels send", "recommend refresh", "recommend show", "jobs list", "jobs run",
            "jobs history", "campaigns validate", "campaigns list", "campaigns preview", "campaigns launch",
            "campaigns pause", "campaigns resume", "campaigns cancel", "campaigns status",
            "completion"} <= names


def test_docs_cli_lists_every_command() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = [line for line in doc.splitlines() if line.startswith("| `cdp-hub ")]
    for path, cmd in _commands(build_cli()):
        if isinstance(cmd, click.Group):
            continue
        row = [r for r in rows if r.startswith(f"| `cdp-hub {path[0]}")]
        assert any(f" {path[-1]}" in r.split("|")[1] or f"`{path[-1]}" in r.split("|")[1] for r in row), \
            f"docs/cli.md does not list cdp-hub {' '.join(path)}"
        own = [o.opts[0] for o in cmd.params if isinstance(o, click.Option) and o.name not in
               ("config", "log_level", "log_format")]
        listed = " ".join(r.split("|")[2] for r in row)
        for flag in own:
            assert f"`{flag}" in listed, f"docs/cli.md does not list {flag} of cdp-hub {' '.join(path)}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cdp-hub {__version__}"


# -- global options ----------------------------------------------------------------------------------------


def test_global_options_go_before_or_after_the_command() -> None:
    before = parse(["--log-level", "INFO", "--config", "a.toml", "run", "--stage", "resolver"])
    after = parse(["run", "--stage", "resolver", "--log-level", "INFO", "-c", "a.toml", "--log-format", "json"])
    assert isinstance(before, Call) and isinstance(after, Call)
    assert (before.log_level, before.config, before.log_format) == ("INFO", "a.toml", None)
    assert (after.log_level, after.config, after.log_format) == ("INFO", "a.toml", "json")
    assert before.args == after.args and after.args.stages == ["resolver"]
    both = parse(["--log-level", "ERROR", "config", "show", "--log-level", "debug"])
    assert isinstance(both, Call) and both.log_level == "DEBUG"  # the one after the command wins


def test_a_global_option_after_the_command_takes_effect(no_config: Path) -> None:
    res = cdp_hub("config", "show", "--json", "--log-level", "INFO", "--log-format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["log_level"] in ("WARNING", "INFO")
    cfg = no_config / "custom.toml"
    cfg.write_text('default_locale = "en"\n', encoding="utf-8")
    res = cdp_hub("config", "show", "--json", "--config", str(cfg))
    assert res.returncode == 0 and json.loads(res.stdout)["default_locale"] == "en"


# -- exit codes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["no-such-command"], ["plugins", "--no-such-option"], ["sync"],
                                  ["segments", "members"], ["run", "--http-port", "eighty"],
                                  ["recommend", "show", "not-a-uuid"], ["dlq"],
                                  ["scenarios", "simulate", "welcome"]])
def test_usage_errors_exit_2_with_the_usage_and_no_traceback(argv: list[str], no_config: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    out = capsys.readouterr()
    assert "Usage: cdp-hub" in out.err + out.out and "Traceback" not in out.err


def test_a_configuration_error_exits_3(no_config: Path) -> None:
    bad = no_config / "bad.toml"
    bad.write_text('bus = "carrier-pigeon"\n', encoding="utf-8")
    res = cdp_hub("--config", str(bad), "config", "show")
    assert res.returncode == EXIT_MISCONFIGURED and "bus" in res.stderr and "Traceback" not in res.stderr
    res = cdp_hub("config", "show", "--config", str(no_config / "missing.toml"))
    assert res.returncode == EXIT_MISCONFIGURED and "config file not found" in res.stderr


def test_an_unreachable_backend_exits_4(no_config: Path) -> None:
    env = {"CDP_HUB_POSTGRES_DSN": "postgresql://cdp:S3cret@127.0.0.1:1/cdp"}
    res = cdp_hub("migrate", env=env)
    assert res.returncode == EXIT_UNREACHABLE, res.stderr
    assert "postgresql://cdp:***@127.0.0.1:1/cdp" in res.stderr and "S3cret" not in res.stderr
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 1


def test_exit_codes_of_errors() -> None:
    from asyncpg.exceptions import CannotConnectNowError, InvalidPasswordError
    from redis.exceptions import AuthenticationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    assert exit_code(ConfigurationError("no such file")) == EXIT_MISCONFIGURED
    assert exit_code(RuntimeError("a bug")) == EXIT_FAILURE

    def raised_from(cause: BaseException) -> ConfigurationError:
        error = ConfigurationError("cannot connect")  # as the store and the hot state raise it
        error.__cause__ = cause
        return error

    # The server is not there: 4. It answered and refused the credentials: 3, a configuration error.
    assert exit_code(raised_from(RedisConnectionError("Error 111 connecting to 127.0.0.1:1"))) == EXIT_UNREACHABLE
    assert exit_code(raised_from(CannotConnectNowError("the database system is starting up"))) == EXIT_UNREACHABLE
    assert exit_code(raised_from(AuthenticationError("invalid password"))) == EXIT_MISCONFIGURED
    assert exit_code(raised_from(InvalidPasswordError("password authentication failed"))) == EXIT_MISCONFIGURED


def test_plugins_exits_1_when_a_plugin_failed_to_load(monkeypatch: pytest.MonkeyPatch, no_config: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import EntryPoint

    from cdp_hub import plugins

    real = plugins.entry_points

    def with_a_broken_one(group: str) -> list[EntryPoint]:
        found = list(real(group=group))
        if group == plugins.CONNECTOR_GROUP:
            found.append(EntryPoint(name="broken_shop", value="no_such_module_xyz", group=group))
        return found

    monkeypatch.setattr(plugins, "entry_points", with_a_broken_one)
    monkeypatch.setattr(plugins, "_REGISTRY", None)
    assert main(["plugins"]) == EXIT_FAILURE
    assert "FAILED" in capsys.readouterr().err
    assert main(["plugins", "--json"]) == EXIT_FAILURE
    assert [f["name"] for f in json.loads(capsys.readouterr().out)["failures"]] == ["broken_shop"]
    monkeypatch.setattr(plugins, "entry_points", real)
    monkeypatch.setattr(plugins, "_REGISTRY", None)
    assert main(["plugins"]) == 0


# -- --json ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["plugins", "--json"], ["config", "show", "--json"], ["config", "check", "--offline", "--json"],
    ["connectors", "list", "--json"], ["connectors", "spec", "loyalty", "--json"],
    ["scenarios", "list", "--json"], ["scenarios", "validate", "--json"], ["segments", "list", "--json"],
    ["segments", "validate", "--json"], ["segments", "schema", "--json"],
    ["segments", "sql", "lapsed_customers", "--json"], ["templates", "list", "--json"],
    ["schema", "check", "--dir", str(ROOT / "schemas"), "--json"],
])
def test_json_output_parses(argv: list[str], no_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    json.loads(capsys.readouterr().out)


def test_json_of_commands_that_write(no_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "connector", "acme_shop", "--dir", str(no_config), "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["created"]).is_dir()
    assert main(["scenarios", "init", "--catalogue", "retail", str(no_config / "cat"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["written"]) > 10
    assert main(["schema", "export", "--out", str(no_config / "schemas"), "--json"]) == 0
    assert all(Path(p).is_file() for p in json.loads(capsys.readouterr().out))


# -- broken pipes ------------------------------------------------------------------------------------------


def test_a_closed_pipe_ends_the_command_quietly(no_config: Path) -> None:
    # The reader is gone before the command writes: every write fails with EPIPE.
    proc = subprocess.Popen([sys.executable, "-m", "cdp_hub.cli", "segments", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == "", err  # no traceback, no "Exception ignored", no second error at exit


def test_head_reads_one_line_and_the_command_says_nothing(no_config: Path) -> None:
    res = subprocess.run(f"'{sys.executable}' -m cdp_hub.cli segments schema | head -1", shell=True,
                         capture_output=True, text=True, timeout=120, env=_env())
    assert res.stdout == "{\n" and res.stderr == ""


# -- completion --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                            tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("this is not TOML", encoding="utf-8")
    monkeypatch.setenv("CDP_HUB_CONFIG", str(broken))  # works with a broken configuration: it is in ~/.bashrc
    assert main(["completion", shell]) == 0
    assert "_CDP_HUB_COMPLETE" in capsys.readouterr().out


def test_completion_through_main_returns_instead_of_exiting(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("_CDP_HUB_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "cdp-hub camp")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert main([]) == 0
    assert "campaigns" in capsys.readouterr().out


def test_completion_answers_through_the_environment(no_config: Path) -> None:
    env = {"_CDP_HUB_COMPLETE": "bash_complete", "COMP_WORDS": "cdp-hub seg", "COMP_CWORD": "1"}
    res = cdp_hub(env=env)
    assert "segments" in res.stdout
    env = {"_CDP_HUB_COMPLETE": "bash_complete", "COMP_WORDS": "cdp-hub run --log-l", "COMP_CWORD": "2"}
    assert "--log-level" in cdp_hub(env=env).stdout


# -- progress ----------------------------------------------------------------------------------------------


def test_plain_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with progress_reporter("import legacy", unit="bytes", stream=out, every=0) as report:
        report(250, 1000)
        report(500, 1000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one per report here (every=0); the end repeats nothing
    assert lines[0].startswith("cdp-hub import legacy: 250/1,000 bytes (25%)") and "ETA" in lines[0]
    assert lines[1].startswith("cdp-hub import legacy: 500/1,000 bytes (50%)")
    rare = io.StringIO()
    with progress_reporter("sync shop", stream=rare, every=3600) as report:
        for done in range(0, 5000, 1000):
            report(done, None)
    assert rare.getvalue().startswith("cdp-hub sync shop: 4,000 records, ")  # only the end, not every call
    assert len(rare.getvalue().splitlines()) == 1
    assert plain_line("sync shop", "records", 1200, None, 2.0) == "cdp-hub sync shop: 1,200 records, 600/s, 2s elapsed"
    quiet = io.StringIO()
    with progress_reporter("x", stream=quiet, every=0, enabled=False) as report:
        report(1, 2)
    assert quiet.getvalue() == ""


def test_a_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    with progress_reporter("campaign run", unit="profiles", stream=out) as report:
        report(40, 100)
    text = out.getvalue()
    assert "campaign run" in text and "40/100 profiles" in text and "40%" in text and "ETA" in text
    out = Terminal()
    with progress_reporter("sync shop", stream=out) as report:  # no total: the count and the rate, no ETA
        report(1200, None)
    text = out.getvalue()
    assert "1,200 records" in text and "/s" in text and "ETA" not in text


def test_tables_on_a_terminal_and_plain_lines_in_a_pipe(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.cli.helpers import print_table

    rows = [("shop", "[bold]not markup[/bold]"), ("crm", "contacts")]
    print_table(("name", "what"), rows, plain=lambda r: f"{r[0]:<6}{r[1]}")
    assert capsys.readouterr().out == "shop  [bold]not markup[/bold]\ncrm   contacts\n"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    print_table(("name", "what"), rows, plain=lambda r: "never used on a terminal")
    text = terminal.getvalue()
    assert "never used" not in text and "name" in text and "[bold]not markup[/bold]" in text and "┃" in text


# -- channels send -----------------------------------------------------------------------------------------


def test_channels_send_renders_and_sends_one_test_message(no_config: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    outbox = no_config / "outbox"
    cfg = no_config / "cdp-hub.toml"
    cfg.write_text(f'[channels.mail]\ntype = "outbox"\n[channels.mail.config]\ndirectory = "{outbox}"\n'
                   f'[channels.texts]\ntype = "outbox"\n[channels.texts.config]\ndirectory = "{outbox}"\n'
                   'kind = "sms"\naddress_kind = "phone"\n', encoding="utf-8")
    profile = no_config / "anna.json"
    profile.write_text(json.dumps({"first_name": "Anna", "locale": "en"}), encoding="utf-8")
    assert main(["channels", "send", "mail", "--to", "anna@example.com", "--template", "welcome",
                 "--profile", str(profile), "--json", "-c", str(cfg)]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["status"] == "sent" and receipt["message_id"].startswith("test-")
    [sent] = [json.loads(p.read_text(encoding="utf-8")) for p in outbox.glob("*.json")]
    assert sent["to"] == "anna@example.com" and "Anna" in sent["text"] and sent["subject"]

    assert main(["channels", "send", "texts", "--to", "+79161234567", "--template", "welcome", "-c", str(cfg)]) == 0
    assert capsys.readouterr().out.startswith("texts: sent")
    assert main(["channels", "send", "mail", "--to", "a@example.com", "--template", "no_such_template",
                 "-c", str(cfg)]) == EXIT_FAILURE
    assert "no_such_template" in capsys.readouterr().err
    assert main(["channels", "send", "mail", "--template", "welcome", "-c", str(cfg)]) == EXIT_USAGE  # no --to
