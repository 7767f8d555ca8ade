"""How fuzzy matching grows with the number of profiles, and what an incremental run costs.

    python bench/fuzzy_scale.py [--sizes 10000 20000 40000 80000 160000] [--changed 0.01] [--seed 3]

For each size, generates that many customer profiles the way the exact resolver leaves them (Russian names with
Zipf-like surnames, patronymics, Latin spellings, diminutives, birth dates, cities, phones and e-mails; about
one in ten people has a second profile under another spelling, a typo or a missing field), runs the full
matcher (``match``) and prints records, candidate pairs, pairs per pass, seconds and the ratios to the first
size. Then, on the largest size, it builds the index an incremental run keeps between runs (``MatchIndex``:
every profile's prepared values and blocking keys; a full run in the store writes the same), marks
``--changed`` of the profiles as changed since the last run and runs the incremental matcher
(``match_incremental``: the changed profiles prepared again, compared with their block neighbours, with the full
run's parameters), printing its time as a share of the full run's and whether it found exactly the pairs of the
full run that involve a changed profile. ``--repeat`` runs the largest size's full and incremental runs that
many times and prints the medians (the machine is shared). The older incremental path, which prepares every
profile (``match(..., changed=...)``), is timed too for comparison.

Near-linear growth means seconds / records stays flat; the goal is an incremental run on 1% changed profiles
in at most 5% of the full run's time. Pure CPU, no database.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from identity_data import CITIES, FEMALE_NAMES, LATIN_FIRST, MALE_NAMES, SURNAMES  # noqa: E402

from cdp_hub.resolver.fuzzy import PersonRecord, default_config, match  # noqa: E402
from cdp_hub.resolver.fuzzy.index import MatchIndex, match_incremental  # noqa: E402
from cdp_hub.resolver.fuzzy.text import transliterate  # noqa: E402

_SURNAME_WEIGHTS = [1 / (rank + 1) ** 0.8 for rank in range(len(SURNAMES))]
_STEMS = ("Бел", "Вет", "Гал", "Дуб", "Жар", "Зим", "Кал", "Лис", "Мел", "Нос", "Пар", "Рог", "Сом", "Тур", "Хол",
          "Чер", "Шир", "Юр", "Ян", "Мор", "Кор", "Бор", "Гор", "Дор", "Сел", "Тар", "Пол", "Мар", "Лар", "Вар")
_MIDDLES = ("ан", "ен", "ин", "ов", "ун", "ар", "ер", "ир", "ял", "ок", "ич", "ут", "ав", "ев", "аш")
_ENDINGS = ("ов", "ев", "ин", "ский", "ых")


def _surname(rng: random.Random, female: bool) -> str:
    # The common surnames by Zipf-like weights (Smirnov about 4%), and a long tail of rarer ones.
    if rng.random() < 0.6:
        base = rng.choices(SURNAMES, weights=_SURNAME_WEIGHTS)[0]
    else:
        base = rng.choice(_STEMS) + rng.choice(_MIDDLES) + rng.choice(_ENDINGS)
    if not female:
        return base
    if base.endswith("ский"):
        return base[:-2] + "ая"
    return base if base.endswith("ых") else base + "а"


def people(count: int, seed: int) -> list[PersonRecord]:
    """``count`` profiles: people, about 10% of them with a second profile that differs in spelling."""
    rng = random.Random(seed)
    out: list[PersonRecord] = []
    k = 0
    while len(out) < count:
        female = rng.random() < 0.5
        if female:
            first, short = rng.choice(FEMALE_NAMES)
        else:
            first, short, _ = rng.choice(MALE_NAMES)
        father = rng.choice(MALE_NAMES)[2][1 if female else 0]
        last = _surname(rng, female)
        year = rng.randint(1950, 2006)
        born = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        city = rng.choices(CITIES, weights=[c[2] for c in CITIES])[0]
        phone = f"+79{rng.randint(10**8, 10**9 - 1)}"
        # Everyone's own mailbox (an e-mail two profiles share, the exact resolver has merged already).
        email = f"{transliterate(last).lower()}.{transliterate(first)[0].lower()}{year}.{k}@mail.ru"
        out.append(PersonRecord(f"p{k}", first, last, father, born, city=city[0], phone=phone, email=email))
        if rng.random() < 0.1 and len(out) < count:
            variant = rng.randrange(4)
            if variant == 0:  # the shop's Latin spelling, no patronymic
                latin = LATIN_FIRST.get(first, (transliterate(first).title(),))[0]
                out.append(PersonRecord(f"p{k}-b", latin, transliterate(last).title(), None, born, city=city[1]))
            elif variant == 1:  # the loyalty app: a diminutive, no birth date, the e-mail
                out.append(PersonRecord(f"p{k}-b", short, last, None, None, city=city[0], email=email))
            elif variant == 2:  # a typo in the surname
                cut = rng.randrange(1, len(last))
                out.append(PersonRecord(f"p{k}-b", first, last[:cut] + last[cut + 1:], father, born))
            else:  # another phone and no e-mail
                out.append(PersonRecord(f"p{k}-b", first, last, father, born,
                                        phone=f"+79{rng.randint(10**8, 10**9 - 1)}"))
        k += 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 40_000, 80_000, 160_000])
    ap.add_argument("--changed", type=float, default=0.01, help="share of profiles changed since the last run")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="full and incremental runs of the largest size (medians)")
    args = ap.parse_args()
    logging.getLogger("cdp_hub.resolver.fuzzy").setLevel(logging.ERROR)
    config = default_config()
    first: tuple[int, int, float] | None = None
    print(f"{'profiles':>9} {'candidates':>11} {'seconds':>8} {'us/profile':>10} {'x records':>9} "
          f"{'x pairs':>8} {'x time':>7}  m from   pairs per pass")
    largest = None
    for size in args.sizes:
        records = people(size, args.seed)
        t0 = time.perf_counter()
        run = match(records, config)
        seconds = time.perf_counter() - t0
        if first is None:
            first = (size, run.candidate_pairs, seconds)
        print(f"{size:>9,} {run.candidate_pairs:>11,} {seconds:>8.1f} {1e6 * seconds / size:>10.0f} "
              f"{size / first[0]:>9.1f} {run.candidate_pairs / max(first[1], 1):>8.1f} {seconds / first[2]:>7.1f}  "
              f"{run.parameters.m_source[:6]:<8} {run.pairs_per_pass}")
        largest = (records, run, seconds)
    assert largest is not None
    records, full, full_seconds = largest
    fulls = [full_seconds]
    for _ in range(args.repeat - 1):
        t0 = time.perf_counter()
        match(records, config)
        fulls.append(time.perf_counter() - t0)
    full_seconds = statistics.median(fulls)
    rng = random.Random(args.seed + 1)
    changed_records = rng.sample(records, max(1, int(len(records) * args.changed)))
    changed = {r.id for r in changed_records}
    wanted = {(p.a, p.b) for p in full.pairs if p.a in changed or p.b in changed}
    builds, incs, olds = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        index = MatchIndex.build(records, config)
        builds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        inc = match_incremental(index, changed_records, parameters=full.parameters)
        incs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        match(records, config, changed=changed, parameters=full.parameters)
        olds.append(time.perf_counter() - t0)
    inc_seconds, old_seconds = statistics.median(incs), statistics.median(olds)
    found = {(p.a, p.b) for p in inc.pairs}
    print(f"full run of {len(records):,} profiles: median {full_seconds:.1f} s of {len(fulls)} "
          f"({', '.join(f'{s:.1f}' for s in fulls)}); building the index: median {statistics.median(builds):.2f} s")
    print(f"incremental: {len(changed):,} changed of {len(records):,} profiles, neighbourhood {inc.neighbourhood:,} "
          f"profiles, {inc.candidate_pairs:,} candidate pairs, median {inc_seconds:.2f} s of {len(incs)} "
          f"({', '.join(f'{s:.2f}' for s in incs)}) = {100 * inc_seconds / full_seconds:.1f}% of the full run "
          f"(goal <= 5%); phases of the last: "
          f"{', '.join(f'{k} {v:.3f}' for k, v in inc.seconds.items())}")
    print(f"  pairs of the full run touching a changed profile found: {len(wanted & found):,} of {len(wanted):,}; "
          f"other pairs: {len(found - wanted):,}")
    print(f"  without the index (every profile prepared again): median {old_seconds:.2f} s = "
          f"{100 * old_seconds / full_seconds:.1f}% of the full run")
    print(f"  (load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
