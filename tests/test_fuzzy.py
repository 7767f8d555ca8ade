"""Fuzzy person matching on small hand-made cases: transliteration, typos, swapped names, birth dates."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from cdp_hub.errors import ConfigurationError
from cdp_hub.resolver.fuzzy import (
    MatcherConfig,
    PersonRecord,
    ScoredPair,
    calibration,
    calibration_report,
    cluster,
    default_config,
    find_matches,
    fold,
    load_matcher_config,
    match,
    name_skeleton,
    soundex,
    transliterate,
)
from cdp_hub.resolver.fuzzy.match import normalize_birth_date

# People who must not match anyone above: they give the small data sets some background.
BACKGROUND = [
    PersonRecord("z1", "Мария", "Козлова", birth_date="1992-06-30", city="Казань"),
    PersonRecord("z2", "John", "Smith", birth_date="1975-12-01", postcode="SW1A 1AA"),
    PersonRecord("z3", "Алексей", "Морозов", birth_date="1960-01-15", phone="+79161234567"),
    PersonRecord("z4", "Elena", "Volkova", birth_date="2001-09-09", email="elena@example.org"),
]


def pairs_of(records: list[PersonRecord], config: MatcherConfig | None = None) -> dict[tuple[str, str], ScoredPair]:
    return {(p.a, p.b): p for p in find_matches(records, config or default_config())}


def test_fold_transliterates_cyrillic_and_drops_punctuation() -> None:
    assert fold("  Иванов ") == "ivanov"
    assert fold("Ёлкина-Щукина") == "elkina shchukina"
    assert fold("José O'Neil") == "jose oneil"
    assert fold("Хрущёв") == "khrushchev"
    assert transliterate("юлия") == "iuliia"  # ICAO Doc 9303, as in Russian passports
    assert fold("---") == ""


def test_name_skeleton_unifies_transliteration_systems() -> None:
    def sk(name: str) -> str:
        return name_skeleton(fold(name))

    assert sk("Юлия") == sk("Yuliya") == sk("Julija")
    assert sk("Дмитрий") == sk("Dmitriy") == sk("Dmitry") == sk("Dmitrii")
    assert sk("Alexander") == sk("Aleksander")
    assert sk("Хабибуллин") == sk("Habibullin")
    assert sk("Иван") != sk("Илья")


def test_soundex() -> None:
    assert soundex("robert") == soundex("rupert") == "r163"
    assert soundex("tymczak") == "t522"
    assert soundex("ashcraft") == "a261"  # h does not separate s and c
    assert soundex("") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1985-03-14", "19850314"), ("19850314", "19850314"), ("14.03.1985", "19850314"),
     ("1985/3/4", "19850304"), ("not a date", None), (None, None)],
)
def test_birth_date_notations(value: str | None, expected: str | None) -> None:
    assert normalize_birth_date(value) == expected


def test_cyrillic_and_latin_spellings_of_one_person_match() -> None:
    records = [
        PersonRecord("a1", "Сергей", "Иванов", birth_date="1985-03-14", city="Москва"),
        PersonRecord("a2", "Sergey", "Ivanov", birth_date="14.03.1985", city="Moskva"),
        PersonRecord("b1", "Юлия", "Фёдорова", birth_date="1979-02-28"),
        PersonRecord("b2", "Yuliya", "Fedorova", birth_date="1979-02-28"),
        *BACKGROUND,
    ]
    found = pairs_of(records)
    assert set(found) == {("a1", "a2"), ("b1", "b2")}
    assert found["a1", "a2"].score >= 0.9999  # what an operator would set for auto-merge
    assert found["a1", "a2"].evidence["surname"].level == "exact"
    assert found["b1", "b2"].evidence["given_name"].level == "exact"


def test_typos_still_match_with_partial_evidence() -> None:
    records = [
        PersonRecord("a", "Anna", "Petrova", birth_date="1990-05-01", postcode="101000"),
        PersonRecord("b", "Ana", "Petorva", birth_date="1990-05-10", postcode="101000"),
        *BACKGROUND,
    ]
    found = pairs_of(records)
    assert set(found) == {("a", "b")}
    ev = found["a", "b"].evidence
    assert ev["surname"].level.startswith("similarity>=")
    assert ev["birth_date"].level == "edits<=1"  # 01 <-> 10: one transposition
    assert ev["given_name"].level == "exact"  # Anna / Ana: doubled letters fold together
    surname = next(c for c in default_config().comparisons if c.field == "surname")
    assert surname.m is not None and surname.u is not None
    assert 0 < ev["surname"].weight < math.log2(surname.m[0] / surname.u[0])  # evidence, less than exact


def test_swapped_given_name_and_surname_match() -> None:
    records = [
        PersonRecord("a", "Olga", "Kuznetsova", birth_date="1988-11-02"),
        PersonRecord("b", "Kuznetsova", "Olga", birth_date="1988-11-02"),
        *BACKGROUND,
    ]
    found = pairs_of(records)
    assert set(found) == {("a", "b")}
    assert found["a", "b"].names_swapped
    assert found["a", "b"].evidence_json()["_names_swapped"] is True


def test_same_name_but_different_birth_dates_do_not_match() -> None:
    records = [
        PersonRecord("a", "Pavel", "Smirnov", birth_date="1970-01-01"),
        PersonRecord("b", "Pavel", "Smirnov", birth_date="1995-07-23"),
        *BACKGROUND,
    ]
    run = match(records, default_config(), threshold=0.0)
    pair = next(p for p in run.pairs if (p.a, p.b) == ("a", "b"))
    assert pair.evidence["birth_date"].level == "different"
    assert pair.score < default_config().suggest_threshold
    assert find_matches(records, default_config()) == []


def test_name_alone_is_not_a_suggestion() -> None:
    # Two customers named Pavel Smirnov and nothing else in common are as likely namesakes as one person.
    records = [PersonRecord("a", "Pavel", "Smirnov"), PersonRecord("b", "Pavel", "Smirnov"), *BACKGROUND]
    run = match(records, default_config(), threshold=0.0)
    pair = next(p for p in run.pairs if (p.a, p.b) == ("a", "b"))
    assert 0.1 < pair.score < default_config().suggest_threshold
    assert find_matches(records, default_config()) == []


def test_different_people_with_one_shared_trait_do_not_match() -> None:
    records = [
        PersonRecord("a", "Ivan", "Petrov", birth_date="1980-01-01", city="Tver"),
        PersonRecord("b", "Oleg", "Sidorov", birth_date="1980-01-01", city="Tver"),
        PersonRecord("c", "Ivan", "Popov", birth_date="1983-04-05", city="Tver"),
        *BACKGROUND,
    ]
    assert find_matches(records, default_config()) == []


def test_cluster_is_connected_components_over_the_threshold() -> None:
    def sp(a: str, b: str, score: float) -> ScoredPair:
        return ScoredPair(a, b, score, 0.0)

    pairs = [sp("a", "b", 0.99), sp("b", "c", 0.95), sp("d", "e", 0.97), sp("c", "d", 0.5), sp("x", "y", 0.1)]
    assert cluster(pairs, 0.9) == [["a", "b", "c"], ["d", "e"]]
    assert cluster(pairs, 0.4) == [["a", "b", "c", "d", "e"]]
    assert cluster(pairs, 0.999) == []


def test_end_to_end_clusters_of_spelling_variants() -> None:
    records = [
        PersonRecord("1", "Дмитрий", "Фёдоров", birth_date="1979-02-28", postcode="190000"),
        PersonRecord("2", "Dmitry", "Fedorov", birth_date="1979-02-28"),
        PersonRecord("3", "Dmitriy", "Fyodorov", birth_date="1979-02-28", postcode="190000"),
        *BACKGROUND,
    ]
    assert cluster(find_matches(records, default_config()), 0.9) == [["1", "2", "3"]]


def test_large_blocks_fall_back_to_a_window() -> None:
    # 60 people born on one day: all-to-all would be 1,770 pairs in that block alone.
    records = [PersonRecord(str(i), f"Name{i:02d}", f"Family{i:02d}", birth_date="2000-01-01") for i in range(60)]
    config = default_config(blocking=[{"keys": ["birth_date"], "max_block_size": 20, "window": 3}])
    run = match(records, config)
    assert run.candidate_pairs == 59 * 2 - 1  # each record with the next two in name order
    small = match(records, default_config(blocking=[{"keys": ["birth_date"]}]))
    assert small.candidate_pairs == 60 * 59 // 2


def _people(count: int, seed: int) -> list[PersonRecord]:
    """``count`` made-up people and a copy of each with one typo in the surname."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ner", "sta", "vo", "ri", "den", "ash", "tu", "bel", "gor", "zan", "pe"]
    out = []
    for k in range(count):
        given = "".join(rng.choice(syllables) for _ in range(2)).title()
        surname = "".join(rng.choice(syllables) for _ in range(3)).title()
        born = f"{rng.randint(1940, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        city = rng.choice(["Tver", "Omsk", "Perm", "Kazan", "Samara"])
        typo = rng.randrange(1, len(surname))
        out.append(PersonRecord(f"p{k}", given, surname, birth_date=born, city=city))
        out.append(PersonRecord(f"p{k}-dup", given, surname[:typo] + surname[typo + 1 :], birth_date=born, city=city))
    return out


def test_estimation_kicks_in_with_enough_records() -> None:
    records = _people(150, seed=7)
    config = default_config(min_records_for_estimation=200)
    run = match(records, config)
    assert run.parameters.u_source == "random pairs"
    assert run.parameters.m_source == "em", run.parameters.m_source
    found = {(p.a, p.b) for p in run.pairs}
    assert {(f"p{k}", f"p{k}-dup") for k in range(150)} <= found
    small = match(records[:50], config)
    assert (small.parameters.u_source, small.parameters.m_source) == ("config", "config")
    assert small.parameters.m["surname"] == config.comparisons[1].m


def test_em_estimate_is_rejected_when_there_are_no_duplicates() -> None:
    records = [r for r in _people(300, seed=8) if not r.id.endswith("-dup")]
    run = match(records, default_config(min_records_for_estimation=200))
    assert run.parameters.m_source.startswith("config (EM rejected")
    # The prior falls back to duplicate_rate: 10% of records duplicate another among (at least) 200 records.
    assert run.parameters.pair_prior == pytest.approx(2 * 0.1 / (max(len(records), 200) - 1))
    assert not run.parameters.validated


def test_record_ids_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        find_matches([PersonRecord("x", "A", "B"), PersonRecord("x", "C", "D")], default_config())


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="unknown function"):
        default_config(blocking=[{"keys": ["metaphone(surname)"]}])
    with pytest.raises(ValidationError, match="needs 4 probabilities"):
        default_config(comparisons=[{"field": "surname", "method": "name", "levels": [0.9, 0.8], "m": [0.9, 0.1]}])
    with pytest.raises(ValidationError, match="extra"):
        default_config(blockng=[])
    with pytest.raises(ValidationError, match="auto_merge_threshold"):
        default_config(suggest_threshold=0.95, auto_merge_threshold=0.9)


def test_load_matcher_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "matcher.toml"
    path.write_text(
        'auto_merge_threshold = 0.99999\n'
        '[[blocking]]\nkeys = ["soundex(names)"]\n'
        '[[blocking]]\nkeys = ["postcode", "year(birth_date)"]\n',
        encoding="utf-8",
    )
    config = load_matcher_config(path)
    assert config.auto_merge_threshold == 0.99999
    assert [b.keys for b in config.blocking] == [["soundex(names)"], ["postcode", "year(birth_date)"]]
    assert config.comparisons == default_config().comparisons

    bad = tmp_path / "bad.toml"
    bad.write_text("suggest_threshold = 2\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="suggest_threshold"):
        load_matcher_config(bad)
    with pytest.raises(ConfigurationError, match="not found"):
        load_matcher_config(tmp_path / "missing.toml")


def _doc_blocks(lang: str) -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "fuzzy-matching.md").read_text(encoding="utf-8")
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_docs_python_example_prints_what_the_docs_say(capsys: pytest.CaptureFixture[str]) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "fuzzy-matching.md").read_text(encoding="utf-8")
    example, printed = re.search(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", text, flags=re.S).groups()  # type: ignore[union-attr]
    exec(compile(example, "docs/fuzzy-matching.md", "exec"), {})
    assert capsys.readouterr().out == printed


def test_docs_toml_example_is_a_valid_config(tmp_path: Path) -> None:
    (toml_text,) = _doc_blocks("toml")
    path = tmp_path / "matcher.toml"
    path.write_text(toml_text, encoding="utf-8")
    config = load_matcher_config(path)
    assert [c.field for c in config.comparisons] == ["given_name", "surname", "birth_date"]
    assert len(config.blocking) == 4


def test_term_frequency_makes_a_rare_name_stronger_evidence_than_a_common_one() -> None:
    # 41 Ivanovs and two Zaitsevas; u is estimated from these records, so it reflects that Ivanov is common.
    records = [PersonRecord(f"i{k}", f"Given{k}", "Иванов", birth_date=f"19{60 + k}-01-01") for k in range(40)]
    records += [PersonRecord("z1", "Anna", "Зайцева", birth_date="1980-05-05"),
                PersonRecord("z2", "Anna", "Zaitseva", birth_date="1980-05-05"),
                PersonRecord("i-twin", "Given1", "Ivanov", birth_date="1961-01-01")]
    tf = default_config(min_records_for_estimation=10, estimate_m=False)  # names weighed by frequency by default
    plain = default_config(
        min_records_for_estimation=10, estimate_m=False,
        comparisons=[{**c.model_dump(), "term_frequency": False} for c in tf.comparisons],
    )

    def surname_weight(config: MatcherConfig, a: str, b: str) -> float:
        pair = next(p for p in match(records, config, threshold=0.0).pairs if (p.a, p.b) == (a, b))
        return pair.evidence["surname"].weight

    common, rare = surname_weight(tf, "i-twin", "i1"), surname_weight(tf, "z1", "z2")
    assert common < surname_weight(plain, "i-twin", "i1") == surname_weight(plain, "z1", "z2") < rare


def test_unreadable_values_are_counted_and_compared_as_missing() -> None:
    records = [
        PersonRecord("a", "Inna", "Orlova", birth_date="31st of May", gender="female"),
        PersonRecord("b", "Inna", "Orlova", birth_date="1983-05-31", gender="female"),
        PersonRecord("c", "---", "Orlova", birth_date="1983-05-31"),
    ]
    # Blocking on a field no comparison uses works too.
    config = default_config(blocking=[{"keys": ["gender"]}, {"keys": ["birth_date"]}])
    run = match(records, config, threshold=0.0)
    assert run.unreadable == {"birth_date": 1, "given_name": 1}
    assert run.candidate_pairs == 2
    ab = next(p for p in run.pairs if (p.a, p.b) == ("a", "b"))
    assert "birth_date" not in ab.evidence  # missing: no evidence either way


def test_empty_and_tiny_inputs() -> None:
    config = default_config()
    assert match([], config).pairs == []
    assert match([PersonRecord("x", "Inna", "Orlova")], config).candidate_pairs == 0
    assert find_matches([PersonRecord("x"), PersonRecord("y")], config) == []  # nothing known: no evidence
    assert cluster([], 0.5) == []


def test_name_method_on_a_field_without_skeletons() -> None:
    config = default_config(comparisons=[
        {"field": "surname", "method": "name", "levels": [0.9]},
        {"field": "city", "method": "name", "levels": [0.9]},
    ], blocking=[{"keys": ["surname"]}], min_records_for_estimation=10, estimate_u=True, estimate_m=True)
    records = [PersonRecord("a", surname="Orlova", city="Tver"), PersonRecord("b", surname="Orlova", city="Omsk")]
    (pair,) = match(records, config, threshold=0.0).pairs
    assert pair.evidence["city"].level == "different"


# -- negative evidence, Russian given names, the prior, calibration ----------------------------------------


def _pair(records: list[PersonRecord], a: str, b: str, config: MatcherConfig | None = None) -> ScoredPair:
    run = match(records, config or default_config(), threshold=0.0)
    return next(p for p in run.pairs if (p.a, p.b) == (a, b))


def test_namesakes_whose_emails_differ_only_in_digits_are_not_a_suggestion() -> None:
    # Two Petrova Annas of one city; their e-mails are their names plus their birth years.
    records = [PersonRecord("a", "Анна", "Петрова", city="Москва", email="petrova.a1971@gmail.com"),
               PersonRecord("b", "Anna", "Petrova", city="Moskva", email="petrova.a1970@gmail.com"), *BACKGROUND]
    pair = _pair(records, "a", "b")
    assert pair.evidence["email"].level == "other_digits"
    assert pair.evidence["email"].weight == default_config().negative_evidence.email_other_digits
    assert find_matches(records, default_config()) == []
    # A real typo keeps the digits: still evidence for one person.
    typo = [PersonRecord("a", "Анна", "Петрова", city="Москва", email="petrova.a1971@gmail.com"),
            PersonRecord("b", "Anna", "Petrova", city="Moskva", email="petorva.a1971@gmail.com"), *BACKGROUND]
    assert _pair(typo, "a", "b").evidence["email"].level == "edits<=1"
    assert _pair(typo, "a", "b").score > pair.score
    # Without the rule the digits' difference is only "different".
    off = default_config(negative_evidence={"email_other_digits": 0.0})
    assert _pair(records, "a", "b", off).evidence["email"].level == "different"


def test_a_household_phone_is_no_evidence_when_given_names_disagree() -> None:
    # Mother and son: one surname, one address, one phone; their given names differ.
    records = [PersonRecord("mum", "Ольга", "Смирнова", birth_date="1970-04-02", phone="+79161112233", city="Тверь"),
               PersonRecord("son", "Иван", "Смирнов", birth_date="1998-11-20", phone="+79161112233", city="Тверь"),
               *BACKGROUND]
    pair = _pair(records, "mum", "son")
    assert pair.evidence["phone"].level == "shared_contact" and pair.evidence["phone"].weight == 0.0
    assert pair.score < 0.01
    without = _pair(records, "mum", "son", default_config(negative_evidence={"shared_contact": False}))
    assert without.evidence["phone"].level == "exact" and without.score > pair.score


def test_short_and_full_russian_given_names_agree() -> None:
    records = [PersonRecord("a", "Александр", "Воронин", birth_date="1988-02-17"),
               PersonRecord("b", "Саша", "Воронин", birth_date="1988-02-17"),
               PersonRecord("c", "Sasha", "Voronin", birth_date="1988-02-17"), *BACKGROUND]
    found = pairs_of(records)
    assert {("a", "b"), ("a", "c"), ("b", "c")} <= set(found)
    assert {found[k].evidence["given_name"].level for k in found} == {"exact"}


def test_the_old_prior_setting_is_refused_with_its_replacement_named() -> None:
    with pytest.raises(ValidationError, match="duplicate_rate"):
        default_config(prior=0.01)


def test_calibration_report_expects_what_the_scores_say() -> None:
    records = _people(150, seed=7)
    config = default_config(min_records_for_estimation=200)
    run = match(records, config, threshold=calibration.REPORT_FLOOR)
    report = calibration_report(run, config)
    assert report.validated and report.m_source == "em"
    assert sum(n for _, _, n in report.histogram) == len(run.pairs)
    by_threshold = {row.threshold: row for row in report.thresholds}
    at = [p.score for p in run.pairs if p.score >= config.suggest_threshold]
    row = by_threshold[config.suggest_threshold]
    assert row.pairs == len(at) and row.expected_true == pytest.approx(sum(at))
    assert row.expected_precision == pytest.approx(sum(at) / len(at))
    counts = [r.pairs for r in report.thresholds]
    assert counts == sorted(counts, reverse=True)  # a higher threshold never suggests more
    assert report.auto_merge.startswith("off")
    assert default_config(auto_merge_threshold=0.9999).auto_merge_threshold == 0.9999
    refused = calibration_report(match(records[:40], default_config(auto_merge_threshold=0.9999)),
                                 default_config(auto_merge_threshold=0.9999))
    assert refused.auto_merge.startswith("refused")
    text = "\n".join(report.lines())
    assert "expected precision" in text and "<- suggest" in text
    assert report.as_json()["thresholds"][0]["expected_false"] >= 0


def test_an_incremental_run_finds_the_full_runs_pairs_that_touch_a_changed_record() -> None:
    records = _people(300, seed=9)
    config = default_config(min_records_for_estimation=200)
    full = match(records, config, threshold=0.5)
    changed = {r.id for r in records[::37]}
    inc = match(records, config, threshold=0.5, changed=changed, parameters=full.parameters)
    touching = {(p.a, p.b): p.score for p in full.pairs if p.a in changed or p.b in changed}
    assert touching and {(p.a, p.b): p.score for p in inc.pairs} == pytest.approx(touching)
    assert inc.candidate_pairs < full.candidate_pairs / 5
    assert inc.parameters is full.parameters  # not estimated again from the few pairs
