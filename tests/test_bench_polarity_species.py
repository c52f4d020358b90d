"""bench.polarity_species' policies: the evidence rules, the worst species of each, and the
library default they are compared with (``LIBRARY_POLICY`` is what a job does)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.polarity_species import LIBRARY_POLICY, REPORTED_POLICIES, analyse, species_polarity
from gloper_jobs.methods.choice import POLARITY_RULES, SPECIES_MARGIN, SPECIES_RULES


def _row(dark: float, light: float, score: float, scales: dict[str, float] | None = None) -> dict[str, Any]:
    """One photo of one method: Dice of the two readings, every rule scoring ``score``."""
    return {"dice": {"consensus": dark, "consensus_lighter": light, "local_8": dark, "local_8_lighter": light},
            "derived": ["consensus", "consensus_lighter"],
            "candidates": {"darker": "consensus", "lighter": "consensus_lighter"},
            "rule_scores": dict.fromkeys(POLARITY_RULES, score),
            "scale_scores": {ls: dict.fromkeys(SPECIES_RULES, v) for ls, v in (scales or {}).items()},
            "seconds": 0.1}


def test_evidence_needs_photos_agreement_and_every_local_size() -> None:
    lighter = [_row(0.0, 0.9, -0.5, {"8": -0.4, "16": -0.3}) for _ in range(8)]
    assert species_polarity(lighter, "evidence:8:1.0") == "lighter"
    assert species_polarity(lighter[:7], "evidence:8:1.0") == "darker"  # too few photos
    mixed = lighter[:7] + [_row(0.0, 0.9, 0.0, {"8": -0.4, "16": -0.3})]  # one photo of eight unclear
    assert species_polarity(mixed, "evidence:8:0.8") == "lighter" and species_polarity(mixed, "evidence:8:1.0") == "darker"
    one_size_disagrees = [_row(0.0, 0.9, -0.5, {"8": -0.4, "16": 0.3}) for _ in range(8)]
    assert species_polarity(one_size_disagrees, "evidence:8:1.0") == "darker"
    assert species_polarity(lighter, f"minority+enclosed>{SPECIES_MARGIN}") == "lighter"
    assert species_polarity(lighter, LIBRARY_POLICY) == "darker"


def test_a_contrary_species_is_the_worst_of_every_flipping_policy() -> None:
    photos = []
    for i in range(12):  # a pale-on-dark species every rule gets right, and one every rule gets wrong
        for sp, (dark, light) in (("SpotsLight", (0.0, 0.9)), ("Holstein", (0.95, 0.0)), ("Spots", (0.9, 0.0))):
            score = -0.6 if sp != "Spots" else 0.6
            photos.append({"rel_path": f"{sp}/{i}.jpg", "species": sp, "group": "synthetic",
                           "methods": {"m": _row(dark, light, score, {"8": score})}})
    res = analyse(photos, "m")
    worst = res["policy_worst"]
    assert set(REPORTED_POLICIES) <= set(worst)
    assert worst["darker"]["synthetic"]["worst_loss"] == 0.0
    for pol in ("evidence:12:1.0", "evidence:8:0.8", f"minority+enclosed>{SPECIES_MARGIN}"):
        assert worst[pol]["synthetic"]["worst_species"] == "Holstein", pol
        assert worst[pol]["synthetic"]["worst_loss"] == pytest.approx(-0.95), pol
    # held out, Holstein is scored with a policy chosen on species that reward flipping
    assert res["species"]["Holstein"]["held-out"] == pytest.approx(0.0)
    assert res["species"]["SpotsLight"]["default-vote"] == pytest.approx(0.0)  # the default flips nothing
