"""Score every label-free choice offline from cached GloPER weight maps (bench/weight_cache.py).

    python bench/choice_rules.py --tag cpu [--steps 25] [--out FILE.json]

For every cached photo: Dice at 256x256 of every GloPER read-out candidate (size
choice x polarity, through the library's ``read_out``) and of k-means' two clusters;
every polarity rule's score on two kinds of evidence (``split``: the photo's global
two-colour split, what the library uses; ``local``: GloPER's darker masks per local
size), each with a margin (lighter only below ``-margin``); then the leave-one-out
selection of the rule over all cached photos (the shared ten plus the synthetic set):
each photo is scored with the rule that is best on all the others. Writes JSON and
prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gloper_jobs.data.images import resize_mask  # noqa: E402
from gloper_jobs.methods import create_segmenter  # noqa: E402
from gloper_jobs.methods.choice import AUTO_MARGIN, AUTO_RULE, POLARITY_RULES  # noqa: E402
from gloper_jobs.methods.gloper_readout import LIGHTER_SUFFIX, candidate_name, read_out  # noqa: E402
from gloper_jobs.scoring.metrics import scores  # noqa: E402

WEIGHTS = REPO / "bench" / "out" / "weights"
SYNTHETIC = ("Stripes", "Spots", "Rosettes", "Patches")


def dice256(mask: np.ndarray, label: np.ndarray) -> float:
    return scores(resize_mask(mask, (256, 256)), label).dice


def photo_table(path: Path, steps: int | None, rho: float) -> dict[str, Any]:
    """Dice of every read-out candidate (the library's ``read_out``) and every rule's
    score on two kinds of evidence, for one cached photo."""
    z = np.load(path)
    fg, label = z["fg"], z["label256"]
    keys = [k for k in z.files if k.startswith("w_")]
    last = max(int(k.split("_")[2]) for k in keys) if steps is None else steps
    sizes = sorted(int(k.split("_")[1]) for k in keys if int(k.split("_")[2]) == last)
    weights = {ls: z[f"w_{ls}_{last}"] for ls in sizes}
    out = read_out(z["image256"], z["fg256"], weights, fg, rho, "fused", "darker")
    dice = {name: round(dice256(m, label), 4) for name, m in out.candidates.items()}
    km = create_segmenter("kmeans", polarity="darker").segment(z["image256"], z["fg256"])
    dice["kmeans"] = round(scores(km.candidates["cluster_0"], label).dice, 4)
    dice["kmeans_lighter"] = round(scores(km.candidates["cluster_1"], label).dice, 4)
    rule_scores = {f"{r}@split": v for r, v in out.info["polarity"]["rule_scores"].items()}
    local = [out.candidates[f"local_{ls}"] for ls in sizes]
    rule_scores |= {f"{r}@local": round(fn(local, fg), 4) for r, fn in POLARITY_RULES.items()}
    return {"species": str(z["species"]), "name": path.stem, "sizes": sizes, "steps": last,
            "seconds": float(z["seconds"]), "dice": dice, "rules": rule_scores,
            "synthetic": str(z["species"]).removesuffix("Light") in SYNTHETIC}


MARGINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def pick(photo: dict[str, Any], rule: str, base: str) -> float:
    """Dice of candidate ``base`` (``fused``, ``local_8``, ``kmeans`` ...) in the polarity
    ``rule`` calls. ``rule`` is ``NAME@EVIDENCE>MARGIN``, ``darker`` or ``lighter``:
    lighter only when the rule's score is below ``-MARGIN``."""
    if rule in ("darker", "lighter"):
        pol = rule
    else:
        name, _, margin = rule.partition(">")
        pol = "lighter" if photo["rules"][name] < -float(margin or 0) else "darker"
    return photo["dice"][candidate_name(base, pol)]


def leave_one_out(photos: list[dict[str, Any]], rules: list[str], base: str) -> tuple[list[float], list[str]]:
    """Each photo's Dice under the rule with the best mean Dice on all other photos."""
    table = np.array([[pick(p, r, base) for r in rules] for p in photos])
    out, chosen = [], []
    for i in range(len(photos)):
        others = np.delete(table, i, axis=0).mean(axis=0)
        best = int(np.argmax(others))  # ties: the earlier rule
        out.append(float(table[i, best]))
        chosen.append(rules[best])
    return out, chosen


def mean(xs: list[float]) -> float:
    return round(float(np.mean(xs)), 4) if xs else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--steps", type=int, default=None, help="read the maps after this many steps (default last)")
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--top", type=int, default=10, help="rules printed per size choice")
    args = ap.parse_args(argv)
    photos = [photo_table(p, args.steps, args.rho) for p in sorted((WEIGHTS / args.tag).glob("*.npz"))]
    real = [i for i, p in enumerate(photos) if not p["synthetic"]]
    syn = [i for i, p in enumerate(photos) if p["synthetic"]]
    bases = [k for k in photos[0]["dice"] if not k.endswith(LIGHTER_SUFFIX)]
    rules = [f"{r}>{m}" for r in photos[0]["rules"] for m in MARGINS]
    summary: dict[str, Any] = {"tag": args.tag, "rho": args.rho, "steps": photos[0]["steps"],
                               "sizes": photos[0]["sizes"], "photos": photos, "choices": {}}
    print(f"{len(real)} real + {len(syn)} synthetic photos, maps after {photos[0]['steps']} steps, "
          f"sizes {photos[0]['sizes']}; Dice at 256x256 (real / synthetic / all)")
    for base in bases:
        rows: dict[str, list[float]] = {
            "oracle-polarity": [max(pick(p, "darker", base), pick(p, "lighter", base)) for p in photos],
            "darker": [pick(p, "darker", base) for p in photos],
            "lighter": [pick(p, "lighter", base) for p in photos],
        }
        for r in rules:
            rows[r.removesuffix(">0.0")] = [pick(p, r, base) for p in photos]
        loo, chosen = leave_one_out(photos, rules, base)
        rows["LOO"] = loo
        block: dict[str, Any] = {name: {"real": mean([v[i] for i in real]), "synthetic": mean([v[i] for i in syn]),
                                        "all": mean(v)} for name, v in rows.items()}
        block["LOO"]["chosen"] = {c: chosen.count(c) for c in sorted(set(chosen))}
        default = f"{AUTO_RULE}@split>{AUTO_MARGIN}"
        summary["choices"][base] = block
        print(f"\n== {base}")
        top = sorted((k for k in block if "@" in k), key=lambda k: -block[k]["all"])[: args.top]
        for name in dict.fromkeys(["oracle-polarity", "darker", "lighter", "LOO", default, *top]):
            b = block[name]
            extra = f"  chosen {b['chosen']}" if "chosen" in b else ""
            print(f"  {name:<24} {b['real']:.3f} / {b['synthetic']:.3f} / {b['all']:.3f}{extra}")
    # the size choice / fusion and the rule together, GloPER's candidates only
    pairs = [(b, r) for b in bases if b != "kmeans" for r in rules]
    table = np.array([[pick(p, r, b) for b, r in pairs] for p in photos])
    joint, joint_chosen = [], []
    for i in range(len(photos)):
        best = int(np.argmax(np.delete(table, i, axis=0).mean(axis=0)))
        joint.append(float(table[i, best]))
        joint_chosen.append(f"{pairs[best][0]} + {pairs[best][1]}")
    summary["joint_LOO"] = {"real": mean([joint[i] for i in real]), "synthetic": mean([joint[i] for i in syn]),
                            "all": mean(joint), "chosen": {c: joint_chosen.count(c) for c in sorted(set(joint_chosen))}}
    print(f"\n== GloPER size choice and rule together, leave-one-out: {summary['joint_LOO']}")
    out = args.out or REPO / "bench" / "out" / f"choice-{args.tag}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {out}")
    return summary


if __name__ == "__main__":
    main()
