"""Polarity per species: settled once per species, never guessed silently.

Which colour is the pattern is a convention of the species (an annotator marks the same
colour on every individual), which the geometry of photos cannot know. So a species reads
the paper's darker colour unless a person (``gloper review``, ``gloper polarity``,
``--polarity``, a manifest's ``polarity`` column) or a calibration (``--settings-from``)
says otherwise. The photos' vote (each rule's mean score over the species' photos, from
the evidence every item stored in ``item.info["polarity"]``) is shown beside the call as a
*suggestion* ("darker; the photos suggest lighter: review") with a *doubt* that orders the
review page. No vote flips a species by itself: every flipping policy lost a held-out
species outright under leave-one-species-out (``python -m bench.polarity_species``,
docs/polarity.md).

The call is recorded on the job (``job.species_polarity``) where the job drains
(:meth:`~gloper_jobs.jobs.kinds.extract.ExtractKind.on_drained`) or a person decides;
re-pointing the photos' chosen masks to it is its own resumable step
(:mod:`gloper_jobs.jobs.repointing`), outside that transaction.

``job.species_polarity``::

    {"rule": "minority+enclosed", "margin": 0.1, "version": int,
     "overrides": {species: polarity},              # --polarity / manifest, before the job ran
     "decisions": {species: [{"polarity", "mask", "by", "at"}, ...]},   # a person's, oldest first
     "calls": {species: {"polarity", "mask", "how", "by", "at", "score", "margin", "photos",
                         "vote", "agree", "suggestion", "doubt", "disagree", "repointed"}},
     "repoint": {"state": "pending" | "done", "version": int, "items": int, "at": ISO}}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

# re-exported: the review page and the CLI settle, re-point and save through this module
from gloper_jobs.jobs.readings import mask_bases, reading_candidates  # noqa: F401
from gloper_jobs.jobs.repointing import repoint, save_as_calibration  # noqa: F401

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.store.models import Item, Job

#: how a species' reading was settled, from the most to the least trusted
HOW = ("person", "calibration", "fixed", "default")
#: photos named per species as disagreeing with the vote (the rest are counted)
DISAGREE_LISTED = 20
#: done items read per query when the calls are decided (memory stays flat at 10^5 photos)
PAGE = 2000


@dataclass(frozen=True)
class SpeciesCall:
    """The photos' vote on one species (:func:`species_call`): ``polarity`` is what the vote
    says (``darker`` when unclear), ``how`` is ``vote`` (a clear call) or ``unclear``, ``score``
    the rule mean closest to the other side (the weakest evidence)."""

    polarity: str
    how: str
    score: float | None
    margin: float
    photos: int

    def as_dict(self) -> dict[str, Any]:
        return {"polarity": self.polarity, "how": self.how,
                "score": None if self.score is None else round(self.score, 4),
                "margin": self.margin, "photos": self.photos}

    @property
    def says(self) -> str | None:
        """``darker``/``lighter`` for a clear vote, None when unclear."""
        return self.polarity if self.how == "vote" else None


def species_call(scores: Mapping[str, Sequence[float]], margin: float) -> SpeciesCall:
    """The species vote over one or more rules (``scores``: rule -> its scores on the
    species' photos, > 0 darker): lighter only when *every* rule's mean is below
    ``-margin``; darker when every mean is above ``margin``; otherwise unclear (darker).
    ``score`` is the rule mean closest to the other side (the weakest evidence)."""
    means = [float(np.mean(v)) for v in scores.values() if len(v)]
    n = max((len(v) for v in scores.values()), default=0)
    if not means:
        return SpeciesCall("darker", "unclear", None, margin, 0)
    if max(means) < -margin:
        return SpeciesCall("lighter", "vote", max(means), margin, n)
    if min(means) > margin:
        return SpeciesCall("darker", "vote", min(means), margin, n)
    return SpeciesCall("darker", "unclear", max(means) if max(means) < 0 else min(means), margin, n)


def doubt_of(how: str, vote: str | None, score: float | None, agree: float | None) -> float:
    """How much a person's look is worth for a species' call, in [0, 1].

    A person's or a fixed reading: 0; a calibration's: 0.1 (one labelled photo a species).
    The darker default: 0.6-1.0 when the photos suggest lighter (more the clearer they
    say it), 0.5 when their vote is unclear, and when they agree with darker
    ``0.4 x`` the share of photos whose own suggestion is not darker."""
    if how in ("person", "fixed"):
        return 0.0
    if how == "calibration":
        return 0.1
    if vote == "lighter":
        return round(0.6 + 0.4 * min(1.0, abs(score or 0.0)), 4)
    if vote is None:
        return 0.5
    return round(0.4 * (1.0 - (agree if agree is not None else 1.0)), 4)


@dataclass
class _Tally:
    """A species' evidence summed over its photos, one page at a time."""

    photos: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    suggestions: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    calibrated: int = 0
    disagree_rows: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, rel_path: str, info: Mapping[str, Any], rules: Sequence[str], calibrated: bool) -> None:
        self.photos += 1
        if info.get("rule") == "fixed":
            self.fixed[info["polarity"]] = self.fixed.get(info["polarity"], 0) + 1
            self.calibrated += int(calibrated)
            return
        for r in rules:
            v = info.get("rule_scores", {}).get(r)
            if v is not None:
                self.sums[r] = self.sums.get(r, 0.0) + float(v)
                self.counts[r] = self.counts.get(r, 0) + 1
        own = _own_suggestion(info, rules)
        self.suggestions[own or "unclear"] = self.suggestions.get(own or "unclear", 0) + 1
        self.disagree_rows.append((rel_path, own))

    def vote(self, margin: float) -> SpeciesCall:
        means = {r: [self.sums[r] / self.counts[r]] for r in self.sums if self.counts.get(r)}
        call = species_call(means, margin)
        return SpeciesCall(call.polarity, call.how, call.score, margin, self.photos)


def _own_suggestion(info: Mapping[str, Any], rules: Sequence[str]) -> str | None:
    """One photo's suggestion from its stored rule scores (None: unclear or no evidence)."""
    from gloper_jobs.methods.choice import SPECIES_MARGIN

    scores = {r: [info["rule_scores"][r]] for r in rules if r in info.get("rule_scores", {})}
    return species_call(scores, SPECIES_MARGIN).says if scores else None


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


def _done_items(session: Session, job_id: int, species: str | None = None) -> Iterator[Item]:
    """The job's done items (of ``species`` only, when given) in id order, a page at a time
    (keyset pagination)."""
    from sqlmodel import col, select

    from gloper_jobs.store.models import Item, ItemStatus

    last = 0
    while True:
        query = select(Item).where(Item.job_id == job_id, Item.status == ItemStatus.done.value, col(Item.id) > last)
        if species is not None:
            query = query.where(Item.species == species)
        page = session.exec(query.order_by(col(Item.id)).limit(PAGE)).all()
        if not page:
            return
        yield from page
        last = int(page[-1].id or 0)
        session.expunge_all()  # nothing kept per finished photo


def _row(session: Session, job: Job) -> Job:
    """The job's row in this session, read afresh and locked where the database can (the
    caller's ``job`` may come from another session: adding it here would write its stale
    status back; two decisions at once must not write over each other)."""
    row = session.get(type(job), job.id, with_for_update=True)
    if row is None:
        return job
    session.refresh(row, with_for_update=True)
    return row


def _now() -> str:
    from gloper_jobs.store.models import utcnow

    return utcnow().isoformat(timespec="seconds")


def decide_species_polarity(session: Session, job: Job, overrides: Mapping[str, str] | None = None,
                            who: str | None = None, only: str | None = None) -> dict[str, Any]:
    """Record each species' call from its done items; re-pointing is left to
    :func:`gloper_jobs.jobs.repointing.repoint` (marked pending here when a call changed).

    A species' call is, in order: a person's latest decision (``job.species_polarity
    ["decisions"]``, or an override of ``--polarity`` / a manifest column / ``overrides``
    here, recorded as a decision of ``who``), a calibration's (the photos ran with a
    ``--settings-from`` job's polarity), a fixed ``--param polarity=``, else the paper's
    darker reading with the photos' vote as its suggestion. Items without polarity evidence
    (methods with one reading) are left out. ``only`` recomputes that species' call alone
    (its photos are read, the other calls kept: a click on the review page of a 10^5-photo
    job reads one species). Returns ``job.species_polarity``.
    """
    from gloper_jobs.jobs.calibration import SETTINGS_FROM
    from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES

    row = _row(session, job)
    data = dict(row.species_polarity or {})
    pending = dict(data.get("overrides", {}))
    decisions: dict[str, list[dict[str, Any]]] = {k: list(v) for k, v in data.get("decisions", {}).items()}
    if overrides:
        now = _now()
        for species, polarity in overrides.items():
            decisions.setdefault(species, []).append(
                {"polarity": polarity, "mask": None, "by": who or "gloper polarity", "at": now})
    calibration = (row.params or {}).get(SETTINGS_FROM)
    tallies: dict[str, _Tally] = {}
    old_calls = data.get("calls", {})
    if only is not None and only not in old_calls:
        only = None  # no call of it yet: decide every species
    for item in _done_items(session, int(row.id or 0), only):
        info = (item.info or {}).get("polarity")
        if isinstance(info, dict) and isinstance(info.get("candidates"), dict):
            tallies.setdefault(item.species, _Tally()).add(item.rel_path, info, SPECIES_RULES,
                                                           calibration is not None)
    calls: dict[str, dict[str, Any]] = dict(old_calls) if only is not None else {}
    for species, t in sorted(tallies.items()):
        vote = t.vote(SPECIES_MARGIN)
        says = vote.says
        n_own = sum(t.suggestions.values())
        agree = round(t.suggestions.get(says or "", 0) / n_own, 4) if n_own and says else None
        entry: dict[str, Any] = {"polarity": "darker", "mask": None, "how": "default", "by": None, "at": None}
        if species in decisions:
            last = decisions[species][-1]
            entry.update(polarity=last["polarity"], mask=last.get("mask"), how="person", by=last.get("by"),
                         at=last.get("at"))
        elif species in pending:
            entry.update(polarity=pending[species], how="person", by=data.get("overrides_by", {}).get(
                species, "--polarity"))
        elif t.fixed:
            polarity = max(t.fixed, key=lambda p: t.fixed[p])
            how = "calibration" if t.calibrated else "fixed"
            entry.update(polarity=polarity, how=how, by=f"calibration {calibration}" if t.calibrated else None)
        suggestion = None
        if says is not None and says != entry["polarity"]:
            suggestion = {"polarity": says, "score": vote.score, "agree": agree}
        disagree = [rel for rel, own in t.disagree_rows if own is not None and own != entry["polarity"]]
        entry.update(
            score=None if vote.score is None else round(vote.score, 4), margin=SPECIES_MARGIN, photos=t.photos,
            vote=says or ("unclear" if n_own else None), agree=agree, suggestion=suggestion,
            doubt=doubt_of(entry["how"], says, vote.score, agree), disagree=disagree[:DISAGREE_LISTED],
            disagree_count=len(disagree), repointed=old_calls.get(species, {}).get("repointed", 0))
        calls[species] = entry
    version = int(data.get("version", 0)) + 1
    result = {**data, "rule": "+".join(SPECIES_RULES), "margin": SPECIES_MARGIN, "version": version,
              "overrides": pending, "decisions": decisions, "calls": calls,
              "repoint": {"state": "pending", "version": version, "items": 0, "at": _now()}}
    row.species_polarity = result
    session.add(row)
    session.flush()  # written now: a caller that refreshes the job must not drop it
    if row is not job:
        job.species_polarity = result
    return result


def settle_species(session: Session, job_id: int, species: str, polarity: str, mask: str | None,
                   who: str) -> dict[str, Any]:
    """A person settles ``species`` of extract job ``job_id``: ``polarity`` and ``mask`` (a
    base candidate name of :func:`gloper_jobs.jobs.repointing.reading_candidates`, None for
    the method's own). Appended to the species' decisions (with ``who`` and when; the latest
    one is the call), the calls recomputed and re-pointing marked pending; the caller
    commits and then runs :func:`~gloper_jobs.jobs.repointing.repoint`. Returns the call.

    Raises :class:`InvalidParameterError` for an unknown species, polarity or mask.
    """
    from gloper_jobs.exceptions import InvalidParameterError
    from gloper_jobs.store.repository import get_job, job_species

    job = _row(session, get_job(session, job_id))
    if polarity not in ("darker", "lighter"):
        raise InvalidParameterError(f"polarity {polarity!r}: use darker or lighter")
    known = job_species(session, job_id)
    if species not in known:
        raise InvalidParameterError(f"job {job_id} has no photo of species {species!r}; its species: "
                                    f"{', '.join(known) or 'none'}")
    if mask is not None:
        bases = mask_bases(session, job, species)
        if mask not in bases:
            raise InvalidParameterError(f"mask {mask!r} is not a candidate of species {species!r}: use one of "
                                        f"{', '.join(bases) or 'none'} (or none for the method's own)")
    data = dict(job.species_polarity or {})
    decisions = {k: list(v) for k, v in data.get("decisions", {}).items()}
    decisions.setdefault(species, []).append({"polarity": polarity, "mask": mask, "by": who, "at": _now()})
    job.species_polarity = {**data, "decisions": decisions}
    session.add(job)
    session.flush()
    return decide_species_polarity(session, job, only=species)["calls"].get(species, {})


def store_overrides(session: Session, job: Job, overrides: Mapping[str, str], by: str = "--polarity") -> None:
    """Keep ``overrides`` on the job (a person's call, applied when it drains, or now by
    :func:`decide_species_polarity`); ``by`` names where they came from."""
    current = dict(job.species_polarity or {})
    current["overrides"] = {**current.get("overrides", {}), **overrides}
    current["overrides_by"] = {**current.get("overrides_by", {}), **dict.fromkeys(overrides, by)}
    job.species_polarity = current
    session.add(job)


def describe_call(call: Mapping[str, Any]) -> str:
    """One species' call in words: ``darker (default; the photos suggest lighter: review)``,
    ``lighter (person: ana, 2026-12-08T10:00:00)``, ``lighter (calibration 12)``."""
    mask = f", mask {call['mask']}" if call.get("mask") else ""
    how = call.get("how", "default")
    if how == "person":
        said = f"person: {call.get('by') or '?'}" + (f", {call['at']}" if call.get("at") else "")
    elif how == "calibration":
        said = call.get("by") or "calibration"
    elif how == "fixed":
        said = "fixed by --param polarity"
    else:
        said = "default"
    sug = call.get("suggestion")
    if sug:
        said += f"; the photos suggest {sug['polarity']}" + (": review" if how == "default" else "")
    elif how == "default" and call.get("vote") == "unclear":
        said += "; the photos' vote is unclear"
    return f"{call['polarity']}{mask} ({said})"


def format_species_polarity(job: Job) -> str:
    """The printable polarity table of a job ('' before it is decided)."""
    data = job.species_polarity or {}
    calls = data.get("calls")
    if not calls:
        pending = data.get("overrides")
        return f"polarity overrides (applied when the job finishes): {pending}" if pending else ""
    lines = [f"polarity per species (the paper's darker reading unless a person or a calibration settles it; "
             f"the photos' vote ({data['rule']}, margin {data['margin']}) is a suggestion; settle with "
             f"`gloper review {job.id}` or `gloper polarity {job.id} SPECIES=lighter`)",
             f"  {'species':<16} {'reading':<8} {'how':<12} {'vote':<8} {'score':>7} {'photos':>6} {'doubt':>5}  "
             "settled / suggestion"]
    for sp, c in sorted(calls.items(), key=lambda kv: -kv[1].get("photos", 0) * kv[1].get("doubt", 0.0)):
        score = f"{c['score']:+.3f}" if c.get("score") is not None else "-"
        how = c["how"]
        lines.append(f"  {sp:<16} {c['polarity']:<8} {how:<12} {c.get('vote') or '-':<8} {score:>7} "
                     f"{c['photos']:>6} {c.get('doubt', 0.0):>5.2f}  {describe_call(c)}")
    rp = data.get("repoint", {})
    if rp.get("state") == "pending":
        lines.append(f"  re-pointing the photos to these calls is unfinished ({rp.get('items', 0)} done): "
                     f"`gloper polarity {job.id}` finishes it")
    return "\n".join(lines)


@dataclass(frozen=True)
class SpeciesReview:
    """One species on the review page: its photos with polarity evidence, its call
    (``job.species_polarity["calls"][species]``), its doubt and ``weight`` = photos x doubt
    (the page and ``gloper status`` order species by it, largest first)."""

    species: str
    photos: int
    call: dict[str, Any]
    doubt: float
    weight: float


def review_queue(session: Session, job_id: int) -> list[SpeciesReview]:
    """The species of extract job ``job_id`` by how much a person's decision matters
    (photos x doubt, then name); decides the calls first if the job has none yet."""
    from gloper_jobs.store.repository import get_job

    job = get_job(session, job_id)
    calls = (job.species_polarity or {}).get("calls")
    if calls is None:
        calls = decide_species_polarity(session, job)["calls"]
    out = [SpeciesReview(sp, int(c.get("photos", 0)), dict(c), float(c.get("doubt", 0.0)),
                         round(int(c.get("photos", 0)) * float(c.get("doubt", 0.0)), 4)) for sp, c in calls.items()]
    return sorted(out, key=lambda r: (-r.weight, r.species))
