"""Incremental fuzzy matching with a kept index gives exactly the full run's pairs that touch a changed record.

The data: a few thousand made-up customers with what real duplicates look like (typos, transposed letters,
Latin spellings, diminutives, swapped given name and surname, day and month swapped), families sharing an
address and a phone, common surnames by a Zipf-like law. Then a day's changes: edited profiles, new ones
(some of them duplicates of old customers), profiles merged away. The incremental run over the index must
give the same pairs, scores and evidence as a full run over the changed data restricted to the pairs that
involve a changed or new profile, with blocks small enough that the window fallback is exercised too.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace

import pytest

from cdp_hub.resolver.fuzzy import MatcherConfig, PersonRecord, ScoredPair, default_config, match
from cdp_hub.resolver.fuzzy.index import MatchIndex, match_incremental
from cdp_hub.resolver.fuzzy.store import load_records, suggest_merges
from cdp_hub.resolver.fuzzy.text import transliterate
from cdp_hub.store import Store

from .identity_data import CITIES, FEMALE_NAMES, LATIN_FIRST, MALE_NAMES, SURNAMES

_STREETS = ("Ленина", "Мира", "Советская", "Гагарина", "Садовая", "Молодёжная", "Школьная", "Лесная")
_SURNAME_WEIGHTS = [1 / (rank + 1) ** 0.8 for rank in range(len(SURNAMES))]


def _typo(rng: random.Random, text: str) -> str:
    """One keyboard slip: a letter dropped, doubled, or two neighbours transposed."""
    if len(text) < 3:
        return text
    k = rng.randrange(1, len(text) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return text[:k] + text[k + 1 :]
    if kind == 1:
        return text[:k] + text[k] + text[k:]
    return text[:k] + text[k + 1] + text[k] + text[k + 2 :]


def _female(surname: str) -> str:
    if surname.endswith("ский"):
        return surname[:-2] + "ая"
    return surname if surname.endswith("ых") else surname + "а"


def _person(rng: random.Random, rid: str, *, surname: str | None = None, address: tuple[str, str, str, str] | None = None,
            phone: str | None = None) -> PersonRecord:
    female = rng.random() < 0.5
    first = rng.choice(FEMALE_NAMES)[0] if female else rng.choice(MALE_NAMES)[0]
    father = rng.choice(MALE_NAMES)[2][1 if female else 0]
    last = surname or rng.choices(SURNAMES, weights=_SURNAME_WEIGHTS)[0]
    if female:
        last = _female(last)
    city, street, number, postcode = address or (
        rng.choice(CITIES)[0], rng.choice(_STREETS), str(rng.randint(1, 120)), f"{rng.randint(100000, 199999)}")
    born = f"{rng.randint(1945, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return PersonRecord(rid, first, last, father, born, street_number=number, address=f"ул. {street}", city=city,
                        postcode=postcode, phone=phone or f"+79{rng.randint(10**8, 10**9 - 1)}",
                        email=f"{transliterate(last).lower()}.{rid}@mail.ru")


def _duplicate(rng: random.Random, rid: str, p: PersonRecord) -> PersonRecord:
    """Another system's profile of the same person."""
    kind = rng.randrange(6)
    if kind == 0:  # the shop: Latin spelling, no patronymic, no address
        latin = LATIN_FIRST.get(p.given_name or "", (transliterate(p.given_name or "").title(),))[0]
        return PersonRecord(rid, latin, transliterate(p.surname or "").title(), None, p.birth_date, city=p.city)
    if kind == 1:  # a typo or transposition in the surname
        return replace(p, id=rid, surname=_typo(rng, p.surname or ""), email=None)
    if kind == 2:  # the loyalty app: names in the wrong fields
        return replace(p, id=rid, given_name=p.surname, surname=p.given_name, middle_name=None, phone=None)
    if kind == 3:  # day and month swapped, a typo in the given name
        born = str(p.birth_date)
        return replace(p, id=rid, given_name=_typo(rng, p.given_name or ""), email=None,
                       birth_date=f"{born[:4]}-{born[8:10]}-{born[5:7]}")
    if kind == 4:  # a diminutive, no birth date
        short = dict((full, short) for full, short in FEMALE_NAMES)
        short.update((full, s) for full, s, _ in MALE_NAMES)
        return replace(p, id=rid, given_name=short.get(p.given_name or "", p.given_name), birth_date=None, phone=None)
    return replace(p, id=rid, phone=None, email=None, street_number=None)  # a thin profile at the same address


def customers(count: int, seed: int) -> list[PersonRecord]:
    """``count`` profiles: families at one address (and one phone), one person in eight with a duplicate."""
    rng = random.Random(seed)
    out: list[PersonRecord] = []
    while len(out) < count:
        k = len(out)
        if rng.random() < 0.2:  # a family: one surname, address and landline
            surname = rng.choices(SURNAMES, weights=_SURNAME_WEIGHTS)[0]
            home = (rng.choice(CITIES)[0], rng.choice(_STREETS), str(rng.randint(1, 120)), f"{rng.randint(100000, 199999)}")
            phone = f"+7495{rng.randint(10**6, 10**7 - 1)}"
            out.extend(_person(rng, f"c{k}-{m}", surname=surname, address=home, phone=phone)
                       for m in range(rng.randint(2, 4)))
        else:
            out.append(_person(rng, f"c{k}"))
        if rng.random() < 0.125:
            out.append(_duplicate(rng, f"c{k}-dup", rng.choice(out[k:])))
    return out[:count]


def _pairs(pairs: list[ScoredPair]) -> dict[tuple[str, str], tuple[float, float, bool, dict[str, tuple[str, float]]]]:
    return {(p.a, p.b): (p.score, p.weight, p.names_swapped,
                         {f: (e.level, e.weight) for f, e in p.evidence.items()}) for p in pairs}


def _config(blocks: str) -> MatcherConfig:
    config = default_config(min_records_for_estimation=500)
    if blocks == "small":  # most blocks are too big to pair all-to-all: the window over the names takes over
        config = MatcherConfig.model_validate({
            **config.model_dump(),
            "blocking": [{**bp.model_dump(), "max_block_size": 4} for bp in config.blocking]})
    return config


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_incremental_pairs_equal_the_full_runs_pairs_that_touch_a_change(blocks: str) -> None:
    config = _config(blocks)
    base = customers(3000, seed=11)
    first = match(base, config, threshold=0.0)
    assert first.parameters.validated
    index = MatchIndex.build(base, config)

    rng = random.Random(12)
    edited = [_duplicate(rng, p.id, p) if rng.random() < 0.5 else replace(p, surname=_typo(rng, p.surname or ""))
              for p in rng.sample(base, 30)]
    edited_ids = {p.id for p in edited}
    removed = {p.id for p in rng.sample([p for p in base if p.id not in edited_ids], 15)}
    new = [_duplicate(rng, f"new{k}", rng.choice(base)) for k in range(10)] + customers(10, seed=13)
    new = [replace(p, id=f"new{k}") for k, p in enumerate(new)]
    by_id = {p.id: p for p in edited}
    # A full run sees the records in the index's order: the old ones in place, the new ones after.
    now = [by_id.get(p.id, p) for p in base if p.id not in removed] + new
    full = match(now, config, threshold=0.0, parameters=first.parameters)
    changed = edited_ids | {p.id for p in new}
    wanted = [p for p in full.pairs if p.a in changed or p.b in changed]

    run = match_incremental(index, edited + new, parameters=first.parameters, threshold=0.0, removed=removed)
    assert sum(p.score >= config.suggest_threshold for p in wanted) >= 10 and any(p.names_swapped for p in wanted)
    assert _pairs(run.pairs) == _pairs(wanted)  # the same pairs, scores, weights and evidence, exactly
    assert run.records == len(now) and len(index) == len(now)
    assert run.neighbourhood is not None and run.neighbourhood < len(now) / 3
    # The old path (every record prepared) agrees, and so does an index built from scratch on the new data.
    assert _pairs(match(now, config, threshold=0.0, changed=changed, parameters=first.parameters).pairs) == _pairs(wanted)
    again = match_incremental(MatchIndex.build(now, config), [p for p in now if p.id in changed],
                              parameters=first.parameters, threshold=0.0)
    assert _pairs(again.pairs) == _pairs(wanted)


def test_an_index_update_moves_a_record_between_blocks() -> None:
    config = default_config()
    a = PersonRecord("a", "Сергей", "Иванов", birth_date="1985-03-14")
    b = PersonRecord("b", "Pavel", "Orlov", birth_date="1990-01-02")
    c = PersonRecord("c", "Pavel", "Orlov", birth_date="1990-01-02", city="Tver")
    index = MatchIndex.build([a, b], config)
    params = match([a, b, c], config).parameters
    run = match_incremental(index, [c], parameters=params)
    assert [(p.a, p.b) for p in run.pairs] == [("b", "c")]
    # b becomes Sergey Ivanov: it leaves Orlov's blocks and joins Ivanov's.
    run = match_incremental(index, [replace(b, given_name="Sergey", surname="Ivanov", birth_date="1985-03-14")],
                            parameters=params)
    assert [(p.a, p.b) for p in run.pairs] == [("a", "b")]
    run = match_incremental(index, [replace(c, city="Omsk")], parameters=params, removed=["a"])
    assert run.pairs == [] and len(index) == 2 and "a" not in index


_GOLDEN = {"given_name": "first_name", "surname": "last_name", "middle_name": "middle_name", "birth_date": "birth_date",
           "city": "city", "postcode": "postal_code", "address": "address", "street_number": "street_number"}


async def _store_profile(store: Store, record: PersonRecord, taken: set[tuple[str, str]],
                         pid: uuid.UUID | None = None) -> str:
    """``record`` as a live profile (golden record, phone and e-mail identities); its profile id."""
    pid = pid or uuid.uuid4()
    golden = {trait: getattr(record, name) for name, trait in _GOLDEN.items() if getattr(record, name)}
    await store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden)
    for kind in ("phone", "email"):
        value = getattr(record, kind)
        if value and (kind, value) not in taken:  # a family's landline: the first member's identity
            taken.add((kind, value))
            await store.execute("INSERT INTO identities (kind, value, profile_id) VALUES ($1, $2, $3)", kind, value, pid)
    return str(pid)


@pytest.mark.parametrize("blocks", ["default", "small"])
async def test_the_stored_index_gives_the_full_runs_pairs_that_touch_a_change(store: Store, blocks: str) -> None:
    config = _config(blocks)
    taken: set[tuple[str, str]] = set()
    base = customers(1200, seed=21)
    ids = [await _store_profile(store, r, taken) for r in base]
    first = await suggest_merges(store, config, incremental=True)  # no previous run: a full one, index written
    assert first.compared is None and first.run is not None
    assert await store.fetchval("SELECT count(*) FROM matcher_profiles") == 1200

    rng = random.Random(22)
    edited = rng.sample(ids, 12)
    for pid in edited:  # a typo, a move, or another system's view of the person
        golden = dict(await store.fetchval("SELECT golden FROM profiles WHERE profile_id = $1", uuid.UUID(pid)))
        golden["last_name"] = _typo(rng, golden.get("last_name", "x")) if rng.random() < 0.5 else golden["first_name"]
        golden["city"] = rng.choice(CITIES)[0]
        await store.execute("UPDATE profiles SET golden = $2, updated_at = now() WHERE profile_id = $1",
                            uuid.UUID(pid), golden)
    merged = rng.sample([p for p in ids if p not in edited], 8)
    await store.execute("UPDATE profiles SET merged_into = $2 WHERE profile_id = ANY($1::uuid[])",
                        [uuid.UUID(p) for p in merged], uuid.UUID(ids[0]))
    new = [await _store_profile(store, _duplicate(rng, "x", rng.choice(base)), taken) for _ in range(8)]
    new += [await _store_profile(store, r, taken) for r in customers(4, seed=23)]

    second = await suggest_merges(store, config, threshold=0.0, incremental=True)
    assert second.run is not None and second.compared == len(edited) + len(new)
    assert second.run.neighbourhood is not None and second.run.neighbourhood < 1200 / 3
    assert await store.fetchval("SELECT count(*) FROM matcher_profiles") == 1200 - len(merged) + len(new)
    changed = set(edited) | set(new)
    full = match(await load_records(store), config, threshold=0.0, parameters=first.run.parameters)
    wanted = [p for p in full.pairs if p.a in changed or p.b in changed]
    assert sum(p.score >= config.suggest_threshold for p in wanted) >= 3
    assert _pairs(second.run.pairs) == _pairs(wanted)
    assert second.profiles == full.records
