"""Choosing an exit setting without peeking: the setting is chosen on some rows and scored on
others. Choosing the best of many settings on the rows it is then scored on flatters a method, and
the more settings it has to pick from, the more (F-PABEE's patiences times thresholds, LTE's fine
grid, against PABEE's five patiences). Here dev is cut at random into a half to choose on and a
half to score on, several times over; the tables report the mean and spread of the scores.

A Split refuses rows on both sides, so nothing built on it can score on a row it chose on.
"""

import random
from dataclasses import dataclass

SPLITS = 20  # random halves of dev per table
SPLIT_SEED = 0  # the same halves for every method and model seed of a task: comparisons are paired


@dataclass(frozen=True)
class Split:
    """Row indices to choose a setting on, and disjoint ones to score it on."""

    choose: tuple
    score: tuple

    def __post_init__(self):
        shared = set(self.choose) & set(self.score)
        if shared:
            raise ValueError(f"a split chooses and scores on the same {len(shared)} rows (e.g. row {min(shared)})")
        if not self.choose or not self.score:
            raise ValueError("a split needs rows to choose on and rows to score on")


def random_halves(n, count=SPLITS, seed=SPLIT_SEED):
    """`count` random cuts of rows 0..n-1 into two halves (the odd row out goes to the scoring half)."""
    rng = random.Random(seed)
    splits = []
    for _ in range(count):
        rows = list(range(n))
        rng.shuffle(rows)
        splits.append(Split(tuple(sorted(rows[:n // 2])), tuple(sorted(rows[n // 2:]))))
    return splits


def best_at(points, target):
    """The (setting, metric, speed-up) with the best metric among `points` reaching at least
    `target` speed-up (ties: the first), or None."""
    reached = [p for p in points if p[2] >= target - 1e-9]
    return max(reached, key=lambda p: p[1]) if reached else None


def choose_and_score(settings, measure, target, split):
    """The setting best at `target` as measured on the split's choosing rows, with its (metric,
    speed-up) on the scoring rows: (setting, metric, speed-up), or None when no setting reaches
    the target on the choosing rows. `measure(setting, rows)` gives (metric, speed-up) on rows."""
    chosen = best_at([(s, *measure(s, split.choose)) for s in settings], target)
    return None if chosen is None else (chosen[0], *measure(chosen[0], split.score))

