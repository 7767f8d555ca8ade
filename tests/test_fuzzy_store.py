"""suggest_merges against the real PostgreSQL: golden records in, idempotent merge suggestions out."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest

from cdp_hub.cli.helpers import Args, Call, attach, command, group
from cdp_hub.config import Settings
from cdp_hub.errors import ConfigurationError
from cdp_hub.resolver.fuzzy import cli as fuzzy_cli
from cdp_hub.resolver.fuzzy import (
    default_config,
    list_suggestions,
    merge_auto_suggestions,
    profile_record,
    set_suggestion_status,
    suggest_merges,
)
from cdp_hub.resolver.fuzzy.store import load_records
from cdp_hub.schema.events import Event
from cdp_hub.store import Store, load_migrations, render_sql


async def add_profile(store: Store, golden: dict[str, Any], *, identities: dict[str, str] | None = None,
                      merged_into: uuid.UUID | None = None) -> uuid.UUID:
    pid = uuid.uuid4()
    await store.execute("INSERT INTO profiles (profile_id, golden, merged_into) VALUES ($1, $2, $3)",
                        pid, golden, merged_into)
    for kind, value in (identities or {}).items():
        await store.execute("INSERT INTO identities (kind, value, profile_id) VALUES ($1, $2, $3)", kind, value, pid)
    return pid


def key(a: uuid.UUID, b: uuid.UUID) -> tuple[str, str]:
    return (str(a), str(b)) if str(a) < str(b) else (str(b), str(a))


async def statuses(store: Store) -> dict[tuple[str, str], str]:
    rows = await store.fetch("SELECT profile_a, profile_b, status FROM merge_suggestions")
    return {(str(r["profile_a"]), str(r["profile_b"])): r["status"] for r in rows}


def test_profile_record_reads_golden_traits_and_splits_a_full_name() -> None:
    rec = profile_record("p", {"full_name": "Козлова Мария Ивановна", "postal_code": "420000",
                               "birth_date": "1992-06-30", "consent": {"email": "opted_in"}},
                         {"phone": "+79161234567"})
    assert (rec.given_name, rec.surname, rec.middle_name) == ("Мария", "Козлова", "Ивановна")
    assert (rec.postcode, rec.birth_date, rec.phone) == ("420000", "1992-06-30", "+79161234567")
    rec = profile_record("q", {"full_name": "Maria Kozlova", "first_name": "Masha"}, {})
    assert (rec.given_name, rec.surname) == ("Masha", None)  # explicit traits win over the full name


async def test_suggest_merges_stores_idempotent_suggestions(store: Store) -> None:
    ivanov_ru = await add_profile(store, {"first_name": "Сергей", "last_name": "Иванов",
                                          "birth_date": "1985-03-14", "city": "Москва"},
                                  identities={"email": "s.ivanov@mail.ru"})
    ivanov_en = await add_profile(store, {"first_name": "Sergey", "last_name": "Ivanov",
                                          "birth_date": "1985-03-14"}, identities={"phone": "+79031112233"})
    # Merged away already: never a candidate, though its golden record is the same person again.
    await add_profile(store, {"first_name": "Сергей", "last_name": "Иванов", "birth_date": "1985-03-14"},
                      merged_into=ivanov_ru)
    await add_profile(store, {"first_name": "Pavel", "last_name": "Smirnov"})
    await add_profile(store, {"first_name": "Pavel", "last_name": "Smirnov"})
    kozlova_1 = await add_profile(store, {"full_name": "Козлова Мария Ивановна", "birth_date": "1992-06-30"})
    kozlova_2 = await add_profile(store, {"first_name": "Maria", "last_name": "Kozlova",
                                          "birth_date": "1992-06-30"})
    # Namesakes born years apart, and a stranger born on Kozlova's birthday: no suggestions.
    await add_profile(store, {"first_name": "Ivan", "last_name": "Petrov", "birth_date": "1970-01-01"})
    await add_profile(store, {"first_name": "Ivan", "last_name": "Petrov", "birth_date": "1995-07-23"})
    await add_profile(store, {"first_name": "Oleg", "last_name": "Sidorov", "birth_date": "1992-06-30"})
    await add_profile(store, {})

    config = default_config()
    result = await suggest_merges(store, config)
    assert result.profiles == 10
    # Auto-merge is off by default: everything is for an operator. Pavel Smirnov twice, with nothing else in
    # common, is as likely two namesakes as one person: not even a suggestion.
    assert await statuses(store) == {key(ivanov_ru, ivanov_en): "open", key(kozlova_1, kozlova_2): "open"}
    assert (result.suggestions, result.inserted, result.updated, result.auto) == (2, 2, 0, [])
    row = await store.fetchrow("SELECT score, evidence, matcher FROM merge_suggestions "
                               "WHERE profile_a = $1 AND profile_b = $2", *map(uuid.UUID, key(ivanov_ru, ivanov_en)))
    assert row is not None and row["score"] >= config.suggest_threshold
    assert row["evidence"]["surname"]["level"] == "exact"  # Иванов / Ivanov
    assert row["evidence"]["birth_date"]["level"] == "exact"
    assert row["matcher"] == result.matcher

    # Running again changes nothing.
    again = await suggest_merges(store, config)
    assert (again.suggestions, again.inserted, again.updated, again.stale) == (2, 0, 0, 0)

    # An operator's decision survives re-runs.
    assert await set_suggestion_status(store, kozlova_2, kozlova_1, "rejected", decided_by="operator")
    assert not await set_suggestion_status(store, kozlova_2, uuid.uuid4(), "rejected", decided_by="operator")
    with pytest.raises(ValueError, match="unknown status"):
        await set_suggestion_status(store, kozlova_1, kozlova_2, "maybe", decided_by="operator")
    await suggest_merges(store, config)
    assert (await statuses(store))[key(kozlova_1, kozlova_2)] == "rejected"
    decided = await store.fetchrow("SELECT decided_by, decided_at FROM merge_suggestions WHERE status = 'rejected'")
    assert decided is not None and decided["decided_by"] == "operator" and decided["decided_at"] is not None

    # A profile merged away meanwhile makes its open suggestions stale.
    await store.execute("UPDATE profiles SET merged_into = $1 WHERE profile_id = $2", ivanov_ru, ivanov_en)
    fourth = await suggest_merges(store, config)
    assert fourth.stale == 1
    assert (await statuses(store))[key(ivanov_ru, ivanov_en)] == "stale"
    assert len(await list_suggestions(store, status=None)) == 2


SYLLABLES = ["ka", "lo", "mi", "ner", "sta", "vo", "ri", "den", "ash", "tu", "bel", "gor", "zan", "pe"]
AUTO = 0.998  # an operator's auto-merge threshold (a small data set: its scores stay lower)


async def add_population(store: Store, people: int = 300, seed: int = 11) -> set[uuid.UUID]:
    """``people`` made-up customers, each twice (the copy with a typo, a missing city, or the same): enough
    records with duplicates for the matcher to estimate its parameters on the data and validate them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(people):
        given = "".join(rng.choice(SYLLABLES) for _ in range(2)).title()
        surname = "".join(rng.choice(SYLLABLES) for _ in range(3)).title()
        born = f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        city = rng.choice(["Tver", "Omsk", "Perm", "Kazan", "Samara"])
        original = {"first_name": given, "last_name": surname, "birth_date": born, "city": city}
        copy = dict(original)
        kind = rng.randrange(3)  # the second system's copy: a typo, a missing field, or just the same
        if kind == 0:
            typo = rng.randrange(1, len(surname))
            copy["last_name"] = surname[:typo] + surname[typo + 1:]
        elif kind == 1:
            del copy["city"]
        rows += [(uuid.uuid4(), original), (uuid.uuid4(), copy)]
    await store.pool.executemany("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", rows)
    return {pid for pid, _ in rows}


def estimating(**overrides: Any) -> Any:
    """The default matcher, estimating from 200 records up, with an auto-merge threshold set."""
    return default_config(min_records_for_estimation=200, auto_merge_threshold=AUTO, **overrides)


def only(pairs: Any, ids: set[uuid.UUID]) -> set[tuple[str, str]]:
    wanted = {str(i) for i in ids}
    return {(p.a, p.b) for p in pairs if p.a in wanted and p.b in wanted}


async def test_auto_merge_needs_a_threshold_and_parameters_estimated_on_the_data(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    ru = await add_profile(store, {"first_name": "Сергей", "last_name": "Иванов", "birth_date": "1985-03-14"})
    en = await add_profile(store, {"first_name": "Sergey", "last_name": "Ivanov", "birth_date": "1985-03-14"})
    # A threshold, but two profiles teach nothing: the configured parameters are a guess, suggestions only.
    with caplog.at_level("WARNING", logger="cdp_hub.resolver.fuzzy"):
        few = await suggest_merges(store, estimating())
    assert few.auto == [] and few.run is not None and not few.run.parameters.validated
    assert "storing suggestions only" in caplog.text
    assert await statuses(store) == {key(ru, en): "open"}
    # With a population to learn from, EM's estimate is validated and the pair becomes an auto-merge.
    await add_population(store)
    enough = await suggest_merges(store, estimating())
    assert enough.run is not None and enough.run.parameters.validated, enough.run.parameters.m_source
    assert key(ru, en) in {(p.a, p.b) for p in enough.auto}
    assert (await statuses(store))[key(ru, en)] == "auto"
    # Without a threshold nothing is auto, however good the estimate.
    off = await suggest_merges(store, default_config(min_records_for_estimation=200))
    assert off.auto == []


async def test_lower_threshold_stores_more_and_upgrades_in_place(store: Store) -> None:
    a = await add_profile(store, {"first_name": "Pavel", "last_name": "Smirnov", "birth_date": "1970-01-01",
                                  "middle_name": "Petrovich"})
    b = await add_profile(store, {"first_name": "Pavel", "last_name": "Smirnov", "birth_date": "1995-07-23",
                                  "middle_name": "Petrovich"})
    population = await add_population(store)
    config = estimating()
    assert only((await suggest_merges(store, config)).run.pairs, {a, b}) == set()  # different birth dates
    low = await suggest_merges(store, config, threshold=0.001)
    assert only(low.auto, {a, b}) == set()
    assert {k: v for k, v in (await statuses(store)).items() if k == key(a, b)} == {key(a, b): "open"}
    # The same birth date arrives: the pair is re-scored in place and becomes an auto-merge candidate.
    await store.execute("UPDATE profiles SET golden = golden || '{\"birth_date\": \"1970-01-01\"}' "
                        "WHERE profile_id = $1", b)
    upgraded = await suggest_merges(store, config)
    assert upgraded.inserted == 0 and key(a, b) in only(upgraded.auto, {a, b})
    assert (await statuses(store))[key(a, b)] == "auto"
    assert population


class _Parser:
    """A command line parsed as the CLI does (a Call), handed back argparse-style: the handler and its args."""

    def __init__(self, root: click.Group) -> None:
        self.root = root

    def parse_args(self, argv: list[str]) -> SimpleNamespace:
        call = self.root.main(argv, standalone_mode=False)
        assert isinstance(call, Call)
        return SimpleNamespace(handler=call.handler, **vars(call.args))


def _dry_run(args: Args, settings: Settings) -> int:
    return 0


def _parser(existing_identity_group: bool = False) -> _Parser:
    root = click.Group("cdp-hub")
    if existing_identity_group:  # as another module (the identity graph's CLI) declares it first
        earlier: list[click.Command] = []
        command(group(earlier, "identity", "identity resolution"), "dry-run", help="replay")(_dry_run)
        attach(root, earlier)
    attach(root, fuzzy_cli.commands)
    return _Parser(root)


def test_cli_joins_an_existing_identity_group() -> None:
    parser = _parser(existing_identity_group=True)
    assert parser.parse_args(["identity", "dry-run"]).handler is _dry_run
    args = parser.parse_args(["identity", "suggest", "--threshold", "0.8", "--auto-merge"])
    assert (args.handler, args.threshold, args.auto_merge) == (fuzzy_cli.cmd_suggest, 0.8, True)
    assert _parser().parse_args(["identity", "suggestions"]).status == "open"


async def test_cli_suggest_and_list(store: Store, pg_dsn: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    a = await add_profile(store, {"first_name": "Юлия", "last_name": "Соколова", "birth_date": "1979-02-28"})
    b = await add_profile(store, {"first_name": "Yuliya", "last_name": "Sokolova", "birth_date": "1979-02-28"})
    c = await add_profile(store, {"first_name": "Iuliia", "last_name": "Sokolova"})
    settings = Settings(postgres_dsn=pg_dsn, data_dir=tmp_path)
    parser = _parser()

    args = parser.parse_args(["identity", "suggest", "--json"])
    assert await args.handler(args, settings) == 0
    summary = json.loads(capsys.readouterr().out)
    # Iuliia Sokolova has no birth date: the name alone is below the default threshold; auto-merge is off.
    assert (summary["profiles"], summary["suggestions"], summary["auto"]) == (3, 1, 0)

    args = parser.parse_args(["identity", "suggest", "--threshold", "0.05", "--report"])
    assert await args.handler(args, settings) == 0
    report = capsys.readouterr().out
    assert "3 suggestions" in report and "auto-merge: off" in report and "expected precision" in report
    assert "m from config" in report  # three profiles teach nothing: the configured parameters

    args = parser.parse_args(["identity", "suggestions", "--status", "open", "--json"])
    assert await args.handler(args, settings) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and (rows[0]["profile_a"], rows[0]["profile_b"]) == key(a, b)  # best first
    assert rows[0]["evidence"]["given_name"]["level"] == "exact"

    args = parser.parse_args(["identity", "suggestions"])
    assert await args.handler(args, settings) == 0
    listed = capsys.readouterr().out
    assert str(c) in listed and "open" in listed

    args = parser.parse_args(["identity", "suggest", "--threshold", "1.5"])
    with pytest.raises(ConfigurationError, match="threshold"):
        await args.handler(args, settings)


def test_greenplum_dialect_distributes_suggestions_by_a_key_column() -> None:
    (migration,) = [m for m in load_migrations() if m.name == "merge_suggestions"]
    sql = render_sql(migration.sql, "greenplum")
    assert "DISTRIBUTED BY (profile_a)" in sql
    assert "PRIMARY KEY (profile_a, profile_b)" in sql  # the unique key includes the distribution key
    assert "DISTRIBUTED" not in render_sql(migration.sql, "postgres")


async def test_auto_merge_goes_through_the_merge_api(store: Store) -> None:
    ivanov_ru = await add_profile(store, {"first_name": "Сергей", "last_name": "Иванов", "birth_date": "1985-03-14"},
                                  identities={"email": "s.ivanov@mail.ru"})
    ivanov_en = await add_profile(store, {"first_name": "Sergey", "last_name": "Ivanov", "birth_date": "1985-03-14"},
                                  identities={"phone": "+79031112233"})
    # The same person by every trait, but two different CRM ids: the identity rules forbid the merge.
    kozlova_1 = await add_profile(store, {"first_name": "Maria", "last_name": "Kozlova", "birth_date": "1992-06-30"},
                                  identities={"crm_id": "CRM-1"})
    kozlova_2 = await add_profile(store, {"first_name": "Мария", "last_name": "Козлова", "birth_date": "1992-06-30"},
                                  identities={"crm_id": "CRM-2"})
    await add_population(store)
    config = estimating()
    result = await suggest_merges(store, config)
    mine = {ivanov_ru, ivanov_en, kozlova_1, kozlova_2}
    assert only(result.auto, mine) == {key(ivanov_ru, ivanov_en), key(kozlova_1, kozlova_2)}
    result.auto = [p for p in result.auto if (p.a, p.b) in only(result.auto, mine)]

    events: list[Event] = []

    async def publish(event: Event) -> None:
        events.append(event)

    merged = await merge_auto_suggestions(store, result.auto, config, publish=publish)
    assert (merged.merged, merged.already_one, merged.held) == (1, 0, [])
    assert [(p.a, p.b) for p, _ in merged.refused] == [key(kozlova_1, kozlova_2)]
    assert "crm_id" in merged.refused[0][1]

    live = {r["profile_id"] for r in await store.fetch("SELECT profile_id FROM profiles WHERE merged_into IS NULL")}
    assert len(live & {ivanov_ru, ivanov_en}) == 1 and {kozlova_1, kozlova_2} <= live
    audit = await store.fetch("SELECT surviving_profile_id, merged_profile_id, reason FROM merges")
    assert len(audit) == 1 and audit[0]["reason"].startswith("fuzzy match: score ")
    assert {audit[0]["surviving_profile_id"], audit[0]["merged_profile_id"]} == {ivanov_ru, ivanov_en}
    assert [e.type for e in events] == ["profile.merged"]
    decided = await statuses(store)
    assert (decided[key(ivanov_ru, ivanov_en)], decided[key(kozlova_1, kozlova_2)]) == ("merged", "rejected")

    again = await suggest_merges(store, config)
    assert only(again.auto, mine) == set() and again.inserted == 0


async def test_auto_merge_holds_long_chains_for_an_operator(store: Store) -> None:
    ids = [await add_profile(store, {"first_name": given, "last_name": "Orlova", "birth_date": "1983-05-31"})
           for given in ("Inna", "Ina", "Инна")]
    await add_population(store)
    config = estimating(auto_merge_max_cluster=2)
    result = await suggest_merges(store, config)
    auto = [p for p in result.auto if (p.a, p.b) in only(result.auto, set(ids))]
    assert len(auto) == 3
    merged = await merge_auto_suggestions(store, auto, config)
    assert merged.merged == 0 and merged.events == []
    assert merged.held == [sorted(str(i) for i in ids)]
    assert {(await statuses(store))[(p.a, p.b)] for p in auto} == {"auto"}
    # Within the cap, the whole cluster becomes one profile: two merges, the third pair is already joined.
    merged = await merge_auto_suggestions(store, auto, estimating())
    assert (merged.merged, merged.already_one, len(merged.events)) == (2, 1, 2)
    live = {r["profile_id"] for r in await store.fetch("SELECT profile_id FROM profiles WHERE merged_into IS NULL")}
    assert len(live & set(ids)) == 1


async def test_cli_auto_merge(store: Store, pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = {await add_profile(store, {"first_name": "Юлия", "last_name": "Соколова", "birth_date": "1979-02-28"}),
           await add_profile(store, {"first_name": "Yuliya", "last_name": "Sokolova", "birth_date": "1979-02-28"})}
    population = await add_population(store, people=150)
    matcher = tmp_path / "matcher.toml"
    matcher.write_text(f"min_records_for_estimation = 200\nauto_merge_threshold = {AUTO}\n", encoding="utf-8")
    settings = Settings(postgres_dsn=pg_dsn, data_dir=tmp_path)
    args = _parser().parse_args(["identity", "suggest", "--auto-merge", "--json", "--report", "--matcher", str(matcher)])
    assert await args.handler(args, settings) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["refused"] == [] and summary["merged"] == summary["auto"] >= 1
    assert summary["calibration"]["validated"] and summary["calibration"]["auto_merge"] == f"on at {AUTO:g}"
    live = {r["profile_id"] for r in await store.fetch("SELECT profile_id FROM profiles WHERE merged_into IS NULL")}
    assert len(live & ids) == 1
    assert len(live & population) >= 150  # each made-up customer's typo copy may have joined them, no more


async def test_records_take_the_latest_identity_and_skip_blocked_values(store: Store) -> None:
    pid = await add_profile(store, {"first_name": "Inna"}, identities={"email": "shop@example.ru"})
    await store.execute("INSERT INTO identities (kind, value, profile_id, last_seen) "
                        "VALUES ('email', 'inna@example.ru', $1, now() + interval '1 day')", pid)
    await store.execute("INSERT INTO identities (kind, value, profile_id) VALUES ('phone', '+74950000000', $1)", pid)
    await store.execute("INSERT INTO blocked_identities (kind, value, reason) VALUES ('phone', '+74950000000', 'shared')")
    (record,) = await load_records(store)
    assert (record.id, record.given_name, record.email, record.phone) == (str(pid), "Inna", "inna@example.ru", None)


async def test_an_incremental_run_compares_only_what_changed_since_the_last(store: Store) -> None:
    ru = await add_profile(store, {"first_name": "Сергей", "last_name": "Иванов", "birth_date": "1985-03-14"})
    await add_profile(store, {"first_name": "Pavel", "last_name": "Orlov", "birth_date": "1990-01-02"})
    config = default_config()
    first = await suggest_merges(store, config, incremental=True)  # no previous run: a full one
    assert first.compared is None and first.suggestions == 0
    en = await add_profile(store, {"first_name": "Sergey", "last_name": "Ivanov", "birth_date": "1985-03-14"})
    second = await suggest_merges(store, config, incremental=True)
    assert second.compared == 1 and second.profiles == 3  # the new profile, against all three
    assert {(p.a, p.b) for p in second.run.pairs} == {key(ru, en)} if second.run else False
    third = await suggest_merges(store, config, incremental=True)  # nothing changed since
    assert third.compared == 0 and third.candidate_pairs == 0 and third.inserted == 0
    assert await statuses(store) == {key(ru, en): "open"}
    runs = await store.fetch("SELECT incremental, compared FROM matcher_runs ORDER BY started_at")
    assert [(r["incremental"], r["compared"]) for r in runs] == [(False, 2), (True, 1), (True, 0)]
