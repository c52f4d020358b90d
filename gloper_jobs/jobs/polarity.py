"""Polarity per species: the photos of a species vote, the call is stored on the job.

Which colour is the pattern is a property of the species (a zebra's stripes are dark
on every zebra), so a job decides it once per species when it drains
(:meth:`~gloper_jobs.jobs.kinds.extract.ExtractKind.on_drained`) from the evidence
every item already stored (``item.info["polarity"]``: each rule's score, the
candidate the method would choose in each polarity), then re-points each item's
chosen candidate (``candidate.is_choice``, ``item.choice``, its ``choice.json``)
without running anything again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.store.models import Job


@dataclass(frozen=True)
class SpeciesCall:
    """One species' polarity and why: ``how`` is ``vote`` (a clear call), ``unclear``
    (no clear call: the paper's darker reading), ``override`` (the user said so) or
    ``fixed`` (the method ran with a fixed polarity or a calibration)."""

    polarity: str
    how: str
    score: float | None
    margin: float
    photos: int

    def as_dict(self) -> dict[str, Any]:
        return {"polarity": self.polarity, "how": self.how,
                "score": None if self.score is None else round(self.score, 4),
                "margin": self.margin, "photos": self.photos}


def species_call(scores: Mapping[str, Sequence[float]], margin: float) -> SpeciesCall:
    """The species vote over one or more rules (``scores``: rule -> its scores on the
    species' photos, > 0 darker): the species reads lighter only when *every* rule's mean
    is below ``-margin``; darker by vote when every mean is above ``margin``; otherwise
    the call is unclear and keeps the paper's darker reading. ``score`` is the rule mean
    closest to the other side (the weakest evidence)."""
    means = [float(np.mean(v)) for v in scores.values() if len(v)]
    n = max((len(v) for v in scores.values()), default=0)
    if not means:
        return SpeciesCall("darker", "unclear", None, margin, 0)
    if max(means) < -margin:
        return SpeciesCall("lighter", "vote", max(means), margin, n)
    if min(means) > margin:
        return SpeciesCall("darker", "vote", min(means), margin, n)
    return SpeciesCall("darker", "unclear", max(means) if max(means) < 0 else min(means), margin, n)


def calibrated_pick(rows: Sequence[Mapping[str, Any]]) -> str:
    """The candidate with the best mean Dice over ``rows`` (each ``{"dice": {name: Dice}}``);
    ties: the first name in the first row's order."""
    names = list(rows[0]["dice"])
    means = {n: float(np.mean([r["dice"][n] for r in rows])) for n in names}
    return max(names, key=lambda n: means[n])


def parse_overrides(text: str | Sequence[str] | None) -> dict[str, str]:
    """``SPECIES=darker|lighter,...`` (one string, or several) -> ``{species: polarity}``.

    Raises :class:`InvalidParameterError` for a pair without ``=`` or another polarity.
    """
    from gloper_jobs.exceptions import InvalidParameterError

    parts = [text] if isinstance(text, str) else list(text or [])
    out: dict[str, str] = {}
    for pair in (p.strip() for part in parts for p in part.split(",")):
        if not pair:
            continue
        species, sep, polarity = (x.strip() for x in pair.partition("="))
        if not sep or not species or polarity not in ("darker", "lighter"):
            raise InvalidParameterError(
                f"--polarity {pair!r}: use SPECIES=darker or SPECIES=lighter (e.g. --polarity Seal=lighter,Zebra=darker)")
        out[species] = polarity
    return out


def check_overrides(overrides: Mapping[str, str], species: Sequence[str] | set[str]) -> None:
    """Raise :class:`InvalidParameterError` for an override of a species the job does not have."""
    from gloper_jobs.exceptions import InvalidParameterError

    unknown = sorted(set(overrides) - set(species))
    if unknown:
        raise InvalidParameterError(
            f"--polarity names species {', '.join(unknown)} that the job has no photo of; "
            f"its species: {', '.join(sorted(set(species))) or 'none'}")


def _rule_scores(infos: Sequence[Mapping[str, Any]], rules: Sequence[str]) -> dict[str, list[float]]:
    """Rule -> its scores over the photos' polarity evidence (photos without it left out)."""
    return {r: [i["rule_scores"][r] for i in infos if r in i.get("rule_scores", {})] for r in rules}


def decide_species_polarity(session: Session, job: Job, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Decide each species' polarity from its done items, re-point their choices, store it on the job.

    A species' call is its override (``overrides`` merged over the job's stored ones),
    else ``fixed`` when its photos ran with a fixed polarity (``--param polarity=darker``,
    a calibration), else the vote of :func:`species_call` over the rule
    :data:`~gloper_jobs.methods.choice.SPECIES_RULES` (an unclear vote keeps darker). Each
    item whose choice is the other polarity's candidate is re-pointed: ``is_choice``,
    ``item.choice`` and its ``choice.json``; nothing runs again. Items without polarity
    evidence (methods with one reading) are left alone. Returns ``job.species_polarity``:
    ``{"rule", "margin", "overrides", "calls": {species: {polarity, how, score, margin,
    photos, disagree: [rel_path], repointed}}}``.
    """
    from sqlmodel import select

    from gloper_jobs.data.outputs import candidate_mask, repoint_choice
    from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES
    from gloper_jobs.store.models import Candidate, Item, ItemStatus

    # the row of this session (the caller's ``job`` may come from another one: adding it
    # here would write its stale status back)
    row = session.get(type(job), job.id) or job
    stored = dict((row.species_polarity or {}).get("overrides", {}))
    stored.update(overrides or {})
    items = session.exec(select(Item).where(Item.job_id == job.id, Item.status == ItemStatus.done.value)).all()
    by_species: dict[str, list[tuple[Item, dict[str, Any]]]] = {}
    for item in items:
        info = (item.info or {}).get("polarity")
        if isinstance(info, dict) and isinstance(info.get("candidates"), dict):
            by_species.setdefault(item.species, []).append((item, info))
    calls: dict[str, dict[str, Any]] = {}
    for species, rows in sorted(by_species.items()):
        if species in stored:
            call = SpeciesCall(stored[species], "override", None, SPECIES_MARGIN, len(rows))
        elif any(info.get("rule") == "fixed" for _, info in rows):
            fixed = [info["polarity"] for _, info in rows]
            polarity = max(set(fixed), key=fixed.count)
            call = SpeciesCall(polarity, "fixed", None, SPECIES_MARGIN, len(rows))
        else:
            call = species_call(_rule_scores([info for _, info in rows], SPECIES_RULES), SPECIES_MARGIN)
        disagree, repointed = [], 0
        for item, info in rows:
            own = species_call(_rule_scores([info], SPECIES_RULES), SPECIES_MARGIN)
            if own.photos and own.polarity != call.polarity:
                disagree.append(item.rel_path)
            target = info["candidates"].get(call.polarity)
            if call.how == "fixed" or target is None or target == item.choice:
                continue
            cands = session.exec(select(Candidate).where(Candidate.item_id == item.id)).all()
            new = next((c for c in cands if c.name == target), None)
            old = next((c for c in cands if c.is_choice and c.mask_path), None)
            if new is None or old is None:
                continue
            # the item's folder (or s3:// prefix) is where its chosen mask was written; the new
            # choice gets its full-resolution PNG there from its stored RLE when it had none
            folder = old.mask_path.rsplit("/", 1)[0]
            size = (item.height, item.width) if item.height and item.width else None
            mask = None if new.mask_path else candidate_mask("", new.rle, size)
            written = repoint_choice(folder, target, mask)
            for c in cands:
                c.is_choice = c.name == target
                if c is new and written is not None:
                    c.mask_path = written
                session.add(c)
            item.choice = target
            session.add(item)
            repointed += 1
        calls[species] = {**call.as_dict(), "disagree": disagree, "repointed": repointed}
    result = {"rule": "+".join(SPECIES_RULES), "margin": SPECIES_MARGIN, "overrides": stored, "calls": calls}
    row.species_polarity = result
    session.add(row)
    session.flush()  # written now: a caller that refreshes the job must not drop it
    if row is not job:
        job.species_polarity = result
    return result


def store_overrides(session: Session, job: Job, overrides: Mapping[str, str]) -> None:
    """Keep ``overrides`` on the job (applied when it drains, or now by :func:`decide_species_polarity`)."""
    current = dict(job.species_polarity or {})
    current["overrides"] = {**current.get("overrides", {}), **overrides}
    job.species_polarity = current
    session.add(job)


def format_species_polarity(job: Job) -> str:
    """The printable polarity table of a job ('' before it is decided)."""
    data = job.species_polarity or {}
    calls = data.get("calls")
    if not calls:
        pending = data.get("overrides")
        return f"polarity overrides (applied when the job finishes): {pending}" if pending else ""
    lines = [f"polarity per species (vote: mean {data['rule']} score(s), lighter when below -{data['margin']}, "
             "darker above; unclear keeps the paper's darker reading; correct with "
             f"`gloper polarity {job.id} SPECIES=lighter`)",
             f"  {'species':<16} {'reading':<8} {'how':<9} {'score':>7} {'photos':>6}  disagree"]
    for sp, c in calls.items():
        score = f"{c['score']:+.3f}" if c.get("score") is not None else "-"
        how = "unclear" if c["how"] == "unclear" else c["how"]
        dis = ", ".join(c["disagree"][:3]) + (f" (+{len(c['disagree']) - 3})" if len(c["disagree"]) > 3 else "")
        lines.append(f"  {sp:<16} {c['polarity']:<8} {how:<9} {score:>7} {c['photos']:>6}  {dis or '-'}")
    return "\n".join(lines)
