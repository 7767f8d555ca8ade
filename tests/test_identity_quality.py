"""The multi-source identity test set (tests/identity_data.py): generator phenomena and the pairwise scorer.

No database: the resolver's quality on this set is measured by bench/identity_quality.py.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter, defaultdict
from functools import cache

import orjson
import pytest

from cdp_hub.schema.events import parse_event
from cdp_hub.schema.identities import normalize_identity, normalize_phone

from .identity_data import (
    ACCOUNT_KINDS,
    JUNK_EMAILS,
    JUNK_PHONES,
    PHONE_FORMATS,
    IdentityDataset,
    Rates,
    account_collisions,
    binomial_ok,
    connected_by_identifiers,
    event_keys,
    format_phone,
    generate,
    identifier_ceiling,
    mixed_clusters,
    pairwise_scores,
    same_partition,
    transliterate,
)

N = 300
CUSTOMER_SOURCES = ("shop", "crm", "erp", "loyalty")


@cache
def data(people: int = N, seed: int = 3) -> IdentityDataset:
    return generate(people, seed)


def customer_records(ds: IdentityDataset, sources: tuple[str, ...] = CUSTOMER_SOURCES) -> list[dict]:
    return [e for e in ds.events if e["type"] == "customer.updated" and e["source"] in sources]


def tagged(ds: IdentityDataset, events: list[dict], tag: str) -> int:
    return sum(1 for e in events if tag in ds.tags[e["event_id"]])


# -- the generator ---------------------------------------------------------------------------------------


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(N, 11), generate(N, 11), generate(N, 12)
    assert a.events == b.events and a.person_of == b.person_of and a.tags == b.tags
    assert a.events != c.events
    assert len({e["event_id"] for e in a.events}) == len(a.events) == len(a.person_of)


def test_events_are_canonical_in_time_order_and_hide_the_truth() -> None:
    ds = data()
    parsed = [parse_event(e) for e in ds.events]
    assert [str(p.event_id) for p in parsed] == [e["event_id"] for e in ds.events]
    assert [e["occurred_at"] for e in ds.events] == sorted(e["occurred_at"] for e in ds.events)
    assert {e["source"] for e in ds.events} == {"shop", "crm", "erp", "loyalty", "app"}
    text = orjson.dumps(ds.events).decode()
    assert not re.search(r"P\d{6}", text), "a person id leaked into the events"
    assert set(ds.person_of) == {e["event_id"] for e in ds.events}
    assert len(set(ds.person_of.values())) == len(ds.people) == N  # every person has records
    # the account key of each system is on every record of that system
    key_of = {"shop": "ecom_customer_id", "crm": "crm_id", "erp": "erp_customer_id", "loyalty": "loyalty_card",
              "app": "device_id"}
    for e in ds.events:
        assert e["identities"][0]["kind"] == key_of[e["source"]]
    # mobile records carry no traits; the others' names are those of their person
    assert all("traits" not in e for e in ds.events if e["source"] == "app")


def test_one_account_per_system_per_person() -> None:
    ds = data()
    accounts: dict[tuple[str, str], set[str]] = defaultdict(set)
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for eid, keys in ds.keys().items():
        for kind, value in keys:
            if kind in ACCOUNT_KINDS:
                accounts[(ds.person_of[eid], kind)].add(value)
                owners[(kind, value)].add(ds.person_of[eid])
    assert all(len(v) == 1 for v in accounts.values())
    assert all(len(v) == 1 for v in owners.values())
    truth = ds.person_of
    assert sum(account_collisions(truth, ds.keys()).values()) == 0


def test_families_share_a_phone_and_keep_their_own_accounts() -> None:
    ds = data(1000)
    people = {p.person_id: p for p in ds.people}
    assert sum(len(f) for f in ds.families) == round(1000 * Rates().family)
    assert all(2 <= len(f) <= 4 for f in ds.families)
    keys = ds.keys()
    phone_users: dict[str, set[str]] = defaultdict(set)
    crm_ids: dict[str, set[str]] = defaultdict(set)
    for eid, ks in keys.items():
        for kind, value in ks:
            if kind == "phone":
                phone_users[value].add(ds.person_of[eid])
            if kind == "crm_id":
                crm_ids[ds.person_of[eid]].add(value)
    shared = 0
    for family in ds.families:
        members = [people[m] for m in family]
        phone = members[0].family_phone
        assert phone is not None and all(m.family_phone == phone for m in members)
        assert len({m.last_male for m in members}) == 1 and len({m.city for m in members}) == 1
        assert ds.category(("phone", phone)) == "family_phone"
        if len(phone_users[phone] & set(family)) > 1:
            shared += 1
        with_crm = [m for m in family if crm_ids[m]]
        assert len({next(iter(crm_ids[m])) for m in with_crm}) == len(with_crm)
    assert shared >= len(ds.families) * 0.8
    assert tagged(ds, ds.events, "family_phone") > 0


def test_namesakes_same_name_birth_year_one_digit_apart_similar_emails() -> None:
    ds = data(1000)
    people = {p.person_id: p for p in ds.people}
    assert len(ds.namesakes) * 2 == 2 * round(1000 * Rates().namesake / 2)
    for a_id, b_id in ds.namesakes:
        a, b = people[a_id], people[b_id]
        assert (a.first, a.last, a.gender) == (b.first, b.last, b.gender)
        ya, yb = str(a.birth.year), str(b.birth.year)
        assert sum(x != y for x, y in zip(ya, yb, strict=True)) == 1
        ea, eb = a.emails[0], b.emails[0]
        assert ea != eb and ea.split("@")[1] == eb.split("@")[1]
        assert ea.replace(ya, "") == eb.replace(yb, "")  # ivanov.a1977@ / ivanov.a1987@
        assert ea.startswith(transliterate(a.last, "popular").lower() + ".")


def test_shared_email_email_change_and_junk() -> None:
    ds = data(1000)
    keys = ds.keys()
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for eid, ks in keys.items():
        for k in ks:
            holders[k].add(ds.person_of[eid])
    assert 0 < len(ds.shared_emails) <= round(1000 * Rates().shared_email)
    for owner, other, email in ds.shared_emails:
        assert owner != other
        assert {other} <= holders[("email", email)]
        assert ds.category(("email", email)) == "shared_email"
    # e-mail changes: the exact share of people, and both addresses seen, in different systems
    changed = [p for p in ds.people if len(p.emails) == 2]
    assert len(changed) == round(1000 * Rates().email_change)
    systems_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in ds.events:
        for kind, value in keys[e["event_id"]]:
            if kind == "email":
                systems_of[(ds.person_of[e["event_id"]], value)].add(e["source"])
    split = [p for p in changed
             if systems_of[(p.person_id, p.emails[0])] and systems_of[(p.person_id, p.emails[1])]
             and systems_of[(p.person_id, p.emails[0])] != systems_of[(p.person_id, p.emails[1])]]
    assert len(split) >= 0.1 * len(changed)
    # junk: many people per value, every value among the generator's list
    junk = {normalize_identity("email", v) for v in JUNK_EMAILS} | {normalize_identity("phone", v) for v in JUNK_PHONES}
    assert junk <= ds.junk
    used = [k for k in junk if len(holders[k]) > 1]
    assert len(used) >= 4
    assert any(len(holders[("phone", s[2])]) > 3 for s in ds.stores)  # a store's phone, typed at the till


def test_record_level_phenomena_at_their_rates() -> None:
    ds = data(1000)
    r = Rates()
    customers = customer_records(ds)
    assert binomial_ok(tagged(ds, customers, "junk_email"), len(customers), r.junk_email)
    assert binomial_ok(tagged(ds, customers, "junk_phone"), len(customers), r.junk_phone)
    erp = [e for e in ds.events if e["source"] == "erp"]
    assert binomial_ok(tagged(ds, erp, "store_phone"), len(erp), (1 - r.junk_phone) * r.store_phone)
    informal = customer_records(ds, ("shop", "loyalty"))
    assert binomial_ok(tagged(ds, informal, "latin"), len(informal), r.latin)
    assert 0 < tagged(ds, informal, "diminutive") <= len(informal) * r.diminutive * 1.3
    devices = [e for e in ds.events if e["type"] == "app.installed"]
    assert binomial_ok(tagged(ds, devices, "orphan_device"), len(devices), r.app_anonymous)
    app_users = {ds.person_of[e["event_id"]] for e in devices}
    assert binomial_ok(len(devices) - len(app_users), len(app_users), r.second_device)
    for source, share in (("shop", r.shop), ("crm", r.crm), ("erp", r.erp), ("loyalty", r.loyalty), ("app", r.app)):
        users = {ds.person_of[e["event_id"]] for e in ds.events if e["source"] == source}
        assert binomial_ok(len(users), 1000, share, sigmas=5), source
    assert tagged(ds, ds.events, "messy_email") > 0


def fold(name: str) -> str:
    return name.replace("ё", "е").replace("Ё", "Е")


def test_names_diminutives_yo_and_latin() -> None:
    ds = data(1000)
    people = {p.person_id: p for p in ds.people}
    seen: Counter[str] = Counter()
    for e in customer_records(ds):
        p = people[ds.person_of[e["event_id"]]]
        tags = ds.tags[e["event_id"]]
        first, last = e["traits"]["first_name"], e["traits"]["last_name"]
        if "latin" in tags:
            assert first.isascii() and last.isascii()
            assert last in {transliterate(n, s) for n in (p.last, fold(p.last)) for s in ("icao", "popular")}
            seen["latin"] += 1
            continue
        if "yo_e" in tags:
            assert "ё" not in (first + last).lower() and "ё" in (p.first + p.short + p.last + p.middle).lower()
            assert fold(last) == fold(p.last)
            seen["yo_e"] += 1
        else:
            assert last == p.last
        if "diminutive" in tags:
            assert fold(first) == fold(p.short) != fold(p.first)
            seen["diminutive"] += 1
        else:
            assert fold(first) == fold(p.first)
        if e["source"] == "crm" and "middle_name" in e["traits"]:
            mid = e["traits"]["middle_name"]
            assert mid.endswith(("вич", "ич")) if p.gender == "male" else mid.endswith("на")
            seen["patronymic"] += 1
    assert min(seen.values()) > 5 and set(seen) == {"latin", "yo_e", "diminutive", "patronymic"}
    assert transliterate("Юлия Щукина") == "Iuliia Shchukina"
    assert transliterate("Дмитрий Соловьёв", "popular") == "Dmitriy Solovyov"


PHONE_PATTERNS = {
    "plus7": r"\+7\d{10}",
    "plus7_spaced": r"\+7 \d{3} \d{3}-\d{2}-\d{2}",
    "plus7_brackets": r"\+7 \(\d{3}\) \d{3}-\d{2}-\d{2}",
    "eight": r"8\d{10}",
    "eight_brackets": r"8 \(\d{3}\) \d{3}-\d{2}-\d{2}",
    "eight_dashes": r"8-\d{3}-\d{3}-\d{2}-\d{2}",
    "seven": r"7\d{10}",
    "seven_spaced": r"7 \d{3} \d{7}",
}


def test_phones_in_all_formats_normalize_to_the_persons_numbers() -> None:
    ds = data()
    people = {p.person_id: p for p in ds.people}
    stores = {s[2] for s in ds.stores}
    formats: Counter[str] = Counter()
    for e in ds.events:
        p = people[ds.person_of[e["event_id"]]]
        for ident in e["identities"]:
            if ident["kind"] != "phone":
                continue
            raw = ident["value"]
            if raw in JUNK_PHONES:
                continue
            fmt = [name for name, pat in PHONE_PATTERNS.items() if re.fullmatch(pat, raw)]
            assert len(fmt) == 1, raw
            formats[fmt[0]] += 1
            assert normalize_phone(raw) in {p.phone, p.family_phone, *stores}
    assert set(formats) == set(PHONE_FORMATS) == set(PHONE_PATTERNS)
    assert format_phone("+79161234567", "eight_brackets") == "8 (916) 123-45-67"


def test_emails_come_in_any_case_and_with_spaces_but_normalize_to_the_persons() -> None:
    ds = data()
    people = {p.person_id: p for p in ds.people}
    typed = {e for _, _, e in ds.shared_emails}
    raw_forms = set()
    for e in ds.events:
        p = people[ds.person_of[e["event_id"]]]
        for ident in e["identities"]:
            if ident["kind"] == "email":
                raw_forms.add("upper" if ident["value"] != ident["value"].lower() else
                              "spaces" if ident["value"] != ident["value"].strip() else "plain")
                value = normalize_identity("email", ident["value"])[1]
                assert value in p.emails or value in typed or value in JUNK_EMAILS
    assert raw_forms == {"upper", "spaces", "plain"}


def test_orphan_devices_share_no_identifier_with_the_rest_of_their_person() -> None:
    ds = data()
    keys = ds.keys()
    by_person: dict[str, list[str]] = defaultdict(list)
    for eid, person in ds.person_of.items():
        by_person[person].append(eid)
    orphans = [eid for eid, tags in ds.tags.items() if "orphan_device" in tags]
    assert orphans
    for eid in orphans:
        own = set(keys[eid])
        others = [o for o in by_person[ds.person_of[eid]] if "orphan_device" not in ds.tags[o]]
        assert {k[0] for k in own} <= {"device_id", "push_token"}
        assert not any(own & set(keys[o]) for o in others)


# -- the scorer ------------------------------------------------------------------------------------------


TRUTH = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2}


def test_pairwise_scores_hand_computed() -> None:
    # true pairs: ab ac bc de = 4
    s = pairwise_scores({"a": "x", "b": "x", "c": "y", "d": "y", "e": "z"}, TRUTH)
    assert (s.true_pairs, s.predicted_pairs, s.true_positive) == (4, 2, 1)  # ab right, cd wrong
    assert (s.precision, s.recall) == (0.5, 0.25)
    assert s.f1 == pytest.approx(1 / 3)
    assert (s.false_pairs, s.missed_pairs, s.records, s.clusters, s.people) == (1, 3, 5, 3, 2)
    one = pairwise_scores(dict.fromkeys(TRUTH, 0), TRUTH)  # everything glued: 10 pairs, 4 true
    assert (one.precision, one.recall) == (0.4, 1.0)
    alone = pairwise_scores({k: k for k in TRUTH}, TRUTH)
    assert (alone.precision, alone.recall, alone.f1) == (1.0, 0.0, 0.0)
    assert pairwise_scores(TRUTH, TRUTH).f1 == 1.0
    # records the partition lacks (dead letters) are clusters of their own
    partial = pairwise_scores({"a": 0, "b": 0, "d": 0}, TRUTH)
    assert (partial.true_positive, partial.predicted_pairs, partial.clusters) == (1, 3, 3)
    # records outside the truth are not scored
    assert pairwise_scores({**TRUTH, "zz": 1}, TRUTH) == pairwise_scores(TRUTH, TRUTH)


def test_pairwise_scores_match_brute_force_on_random_partitions() -> None:
    rng = random.Random(5)
    for _ in range(30):
        n = rng.randint(1, 40)
        truth = {i: rng.randrange(max(1, n // 3)) for i in range(n)}
        pred = {i: rng.randrange(max(1, n // rng.randint(1, 5))) for i in range(n) if rng.random() < 0.9}
        tp = fp = fn = 0
        for a, b in itertools.combinations(range(n), 2):
            same_pred = a in pred and b in pred and pred[a] == pred[b]
            same_true = truth[a] == truth[b]
            tp += same_pred and same_true
            fp += same_pred and not same_true
            fn += same_true and not same_pred
        s = pairwise_scores(pred, truth)
        assert (s.true_positive, s.false_pairs, s.missed_pairs) == (tp, fp, fn)


KEYS = {
    "r1": [("email", "a@x.ru"), ("phone", "+79160000001")],  # P1; the phone is the family's
    "r2": [("email", "a@x.ru")],                              # P1
    "r3": [("crm_id", "1")],                                  # P1, shares nothing
    "r4": [("phone", "+79160000001")],                        # P2, the family phone
    "r5": [("phone", "+79160000001"), ("crm_id", "2")],       # P2
    "r6": [("email", "test@test.ru")],                        # P3, junk only
    "r7": [("email", "test@test.ru")],                        # P3
}
KEY_TRUTH = {"r1": "P1", "r2": "P1", "r3": "P1", "r4": "P2", "r5": "P2", "r6": "P3", "r7": "P3"}
JUNK = {("email", "test@test.ru")}


def test_identifier_ceiling_and_naive_union_hand_computed() -> None:
    ceiling = identifier_ceiling(KEYS, KEY_TRUTH, JUNK)
    groups = {frozenset(r for r in ceiling if ceiling[r] == ceiling[x]) for x in ceiling}
    assert groups == {frozenset({"r1", "r2"}), frozenset({"r3"}), frozenset({"r4", "r5"}), frozenset({"r6"}),
                      frozenset({"r7"})}
    s = pairwise_scores(ceiling, KEY_TRUTH)
    assert (s.true_pairs, s.true_positive, s.precision, s.recall) == (5, 2, 1.0, 0.4)

    naive = connected_by_identifiers(KEYS, JUNK)  # the family phone glues P1 and P2
    s = pairwise_scores(naive, KEY_TRUTH)
    assert (s.predicted_pairs, s.true_positive) == (6, 2)
    assert (s.precision, s.recall) == (pytest.approx(1 / 3), 0.4)
    s = pairwise_scores(connected_by_identifiers(KEYS), KEY_TRUTH)  # and the junk e-mail joins r6 and r7
    assert (s.predicted_pairs, s.true_positive) == (7, 3)

    mixed = mixed_clusters(naive, KEY_TRUTH, KEYS)
    assert len(mixed) == 1
    assert (mixed[0].records, mixed[0].people, mixed[0].false_pairs) == (4, 2, 4)
    assert mixed[0].shared == {("phone", "+79160000001"): 2}
    collisions = account_collisions(naive, KEYS)
    assert collisions["crm_id"] == 0  # r3 is not in the glued cluster
    assert account_collisions(dict.fromkeys(KEYS, 0), KEYS)["crm_id"] == 1


def test_same_partition_ignores_labels() -> None:
    a = {"a": 1, "b": 1, "c": 2}
    assert same_partition(a, {"a": "x", "b": "x", "c": "y"})
    assert not same_partition(a, {"a": "x", "b": "y", "c": "y"})
    assert not same_partition(a, {"a": "x", "b": "x", "c": "x"})
    assert not same_partition(a, {"a": "x", "b": "x"})


def test_ceiling_on_generated_data_is_between_naive_and_truth() -> None:
    ds = data()
    keys = ds.keys()
    ceiling = pairwise_scores(identifier_ceiling(keys, ds.person_of, ds.junk), ds.person_of)
    assert ceiling.precision == 1.0 and 0.5 < ceiling.recall < 1.0  # orphan devices, unlinked e-mail changes
    naive = pairwise_scores(connected_by_identifiers(keys), ds.person_of)
    assert naive.recall >= ceiling.recall and naive.precision < 1.0  # junk values, families, shared e-mails
    assert event_keys(ds.events[0]) == keys[ds.events[0]["event_id"]]
