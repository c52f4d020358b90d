"""Per-item, per-species and overall Dice, and the list of failed photos."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gloper_jobs.store.models import Candidate, Item, ItemStatus
from gloper_jobs.store.repository import (
    chosen_rows,
    count_with_status,
    score_rows,
)


@dataclass(frozen=True)
class ItemScore:
    """Dice of one labelled photo: the oracle's best candidate and the label-free choice."""

    rel_path: str
    species: str
    oracle: str
    oracle_dice: float
    choice: str
    choice_dice: float


@dataclass(frozen=True)
class SpeciesRow:
    species: str
    n: int
    oracle_dice: float
    choice_dice: float


def item_scores(pairs: Sequence[tuple[Item, Candidate]]) -> list[ItemScore]:
    """Collapse (item, candidate) rows to one :class:`ItemScore` per scored item."""
    by_item: dict[int, list[tuple[Item, Candidate]]] = defaultdict(list)
    for item, cand in pairs:
        if cand.dice is not None and item.id is not None:
            by_item[item.id].append((item, cand))
    out: list[ItemScore] = []
    for rows in by_item.values():
        item = rows[0][0]
        raw = [c for _, c in rows if not c.derived] or [c for _, c in rows]
        best = max(raw, key=lambda c: c.dice or 0.0)
        chosen = next((c for _, c in rows if c.is_choice), best)
        out.append(ItemScore(item.rel_path, item.species, best.name, float(best.dice or 0.0),
                             chosen.name, float(chosen.dice or 0.0)))
    return sorted(out, key=lambda s: s.rel_path)


def streamed_species_rows(session: Session, job_id: int) -> list[SpeciesRow]:
    """:func:`species_rows` of the job's scored items, read from the store in pages and
    summed as they come (the same figures; memory independent of the job's size)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # n, oracle, choice

    def add(rows: list[tuple[Any, ...]]) -> None:
        raw = [r for r in rows if not r[5]] or rows
        best = max(raw, key=lambda r: r[4] or 0.0)
        chosen = next((r for r in rows if r[6]), best)
        acc = sums[rows[0][2]]
        acc[0] += 1
        acc[1] += float(best[4] or 0.0)
        acc[2] += float(chosen[4] or 0.0)

    group: list[tuple[Any, ...]] = []
    for row in score_rows(session, job_id):
        if group and row[0] != group[0][0]:
            add(group)
            group = []
        group.append(tuple(row))
    if group:
        add(group)
    rows = [SpeciesRow(sp, int(n), o / n, c / n) for sp, (n, o, c) in sorted(sums.items())]
    if rows:
        n, oracle, choice = (sum(acc[i] for acc in sums.values()) for i in range(3))
        rows.append(SpeciesRow("ALL", int(n), oracle / n, choice / n))
    return rows


def species_rows(scores: Sequence[ItemScore]) -> list[SpeciesRow]:
    """Mean Dice per species, sorted by name, then an ``ALL`` row (mean over photos)."""
    groups: dict[str, list[ItemScore]] = defaultdict(list)
    for s in scores:
        groups[s.species].append(s)
    rows = [
        SpeciesRow(sp, len(g), sum(x.oracle_dice for x in g) / len(g), sum(x.choice_dice for x in g) / len(g))
        for sp, g in sorted(groups.items())
    ]
    if scores:
        rows.append(SpeciesRow("ALL", len(scores), sum(x.oracle_dice for x in scores) / len(scores),
                               sum(x.choice_dice for x in scores) / len(scores)))
    return rows


def format_species_table(rows: Sequence[SpeciesRow], title: str) -> str:
    """A plain-text table: species, photos, oracle Dice, label-free Dice."""
    if not rows:
        return f"{title}\n(no labelled photos: nothing to score)"
    width = max(12, *(len(r.species) for r in rows))
    lines = [title, f"{'species':<{width}}  {'photos':>6}  {'oracle Dice':>11}  {'label-free Dice':>15}"]
    lines.append("-" * len(lines[-1]))
    for r in rows:
        if r.species == "ALL":
            lines.append("-" * len(lines[1]))
        lines.append(f"{r.species:<{width}}  {r.n:>6}  {r.oracle_dice:>11.3f}  {r.choice_dice:>15.3f}")
    return "\n".join(lines)


def format_photo_list(session: Session, job_id: int, limit: int = 20) -> str:
    """An unlabelled job's finished photos: path, chosen candidate and its pattern fraction."""
    finished = count_with_status(session, job_id, [ItemStatus.done.value])
    chosen = chosen_rows(session, job_id, limit)
    if not chosen:
        return "(no finished photos yet)"
    width = max(len(path) for path, _, _ in chosen)
    lines = [f"photos ({finished} finished; chosen mask and the share of the image it covers):"]
    lines += [f"  {path:<{width}}  {name:<10} {fraction:6.3f}" for path, name, fraction in chosen]
    if finished > limit:
        lines.append(f"  ... {finished - limit} more: `gloper export {job_id} --format csv` lists them all, "
                     f"`gloper report {job_id} --html report.html` shows them")
    return "\n".join(lines)
