"""Per-photo GloPER's masks stay bit-for-bit what they were when its code was one package.

``tests/data/gloper_golden-*.npz`` hold every candidate mask (packed bits) that per-photo
GloPER made on two shared photos, under the CPU profile and under the stacked (vmap) engine,
with the code as it stood before GloPER's modules were merged into
``gloper_jobs.methods.gloper`` (commit dcc7af8). A refactor of the network, the loss, the
training loop or the read-out that changes one pixel fails here.

Float kernels differ between CPUs: oneDNN and OpenCV pick code paths by instruction set,
vendor and microarchitecture. Two AMD EPYCs that both report AVX-512 gave 6 to 81 of 16,384
pixels apart, an Intel Xeon up to 177. So each file records the CPU it was made on (vendor,
family, model, a hash of its SIMD flags, torch's CPU capability and the torch and OpenCV
versions), the comparison is exact against the file made on this same kind of CPU, and
within 2 % of pixels against the vendor's reference file elsewhere, which the test states.
``gloper_golden-AuthenticAMD.npz`` and ``-GenuineIntel.npz`` predate the fingerprint (their
machines are not known beyond vendor and AVX-512); they are the references.

Each file also records the label-free choice. Since [review] a photo's own polarity never
flips its reading (``polarity=auto`` keeps the paper's darker colour and records the
photo's suggestion; the species is settled when its job drains), so the seal cases' choice
became ``consensus`` where ``consensus_lighter`` was stored: only those choice strings were
changed in every file, not one mask bit.

A file for a new kind of CPU is written by ``python -m tests.test_gloper_golden``. Before
committing one, check that the code as it is makes the same masks on that CPU as commit
dcc7af8's code (run ``_masks`` from a worktree of dcc7af8 and compare), so that the file
still records the old code's masks; regenerate every file only for an intended change.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gloper_jobs.data.images import load_image
from gloper_jobs.devices import cpu_info
from gloper_jobs.methods import create_segmenter

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gloper-examples"
DATA = Path(__file__).with_name("data")
#: what another CPU's file is compared within (share of pixels)
OTHER_CPU_TOLERANCE = 0.02
#: (case name, photo relative to the examples, GloPER parameters)
CASES: list[tuple[str, str, dict[str, object]]] = [
    ("pandas_cpu", "Pandas/0_-1_70_v025_f000325.jpg", {}),
    ("pandas_stacked", "Pandas/0_-1_70_v025_f000325.jpg", {"batch_sizes": "on"}),
    ("seal_cpu", "Seal", {}),
    ("seal_authors_loop", "Seal", {"stop_every": 0, "steps": 12}),
]


def _examples_dir() -> Path:
    import os

    return Path(os.environ.get("GLOPER_EXAMPLES_DIR", EXAMPLES))


def _photo(rel: str) -> Path:
    path = _examples_dir() / rel
    if path.is_dir():
        path = next(p for p in sorted(path.iterdir()) if p.is_file())
    return path


def _foreground(shape: tuple[int, ...]) -> np.ndarray:
    """A fixed ellipse over the middle of the frame (no foreground model in the loop)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.45 * w)) ** 2 <= 1.0


def _masks(rel: str, params: dict[str, object]) -> tuple[dict[str, np.ndarray], str]:
    image = load_image(_photo(rel))
    seg = create_segmenter("gloper", device="cpu", **params)
    try:
        out = seg.segment(image, _foreground(image.shape))
    finally:
        seg.close()
    return out.candidates, out.choice


def _isa() -> str:
    return str(torch.backends.cpu.get_cpu_capability())


def _vendor() -> str:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``; ``unknown`` off Linux)."""
    return cpu_info().get("vendor_id", "unknown")


def _fingerprint() -> str:
    """What picks the float kernels: vendor, family, model, SIMD flags, torch and OpenCV."""
    import cv2

    info = cpu_info()
    simd = sorted(f for f in info.get("flags", "").split() if re.match(r"(avx|amx|fma|f16c|sse|ssse|vnni|vaes)", f))
    digest = hashlib.sha256(" ".join(simd).encode()).hexdigest()[:10]
    return (f"{_vendor()}-{info.get('cpu family', '?')}-{info.get('model', '?')}-{digest}"
            f"-{_isa()}-torch{torch.__version__}-cv{cv2.__version__}")


def _golden_path(name: str) -> Path:
    return DATA / f"gloper_golden-{name}.npz"


def _golden_for_this_cpu() -> tuple[np.lib.npyio.NpzFile, bool]:
    """The file made on this kind of CPU (exact), else this vendor's reference (tolerance)."""
    mine = _fingerprint()
    for path in sorted(DATA.glob("gloper_golden-*.npz")):
        golden = np.load(path)
        if "fingerprint" in golden.files and str(golden["fingerprint"]) == mine:
            return golden, True
    reference = _golden_path(_vendor())
    return np.load(reference if reference.exists() else _golden_path("AuthenticAMD")), False


def _write() -> None:
    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {"isa": np.array(_isa()), "cpu": np.array(_vendor()),
                                     "fingerprint": np.array(_fingerprint())}
    for case, rel, params in CASES:
        candidates, choice = _masks(rel, params)
        arrays[f"{case}:choice"] = np.array(choice)
        for name, mask in candidates.items():
            arrays[f"{case}:shape:{name}"] = np.array(mask.shape)
            arrays[f"{case}:mask:{name}"] = np.packbits(mask)
    DATA.mkdir(exist_ok=True)
    np.savez_compressed(_golden_path(_fingerprint()), **arrays)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("case,rel,params", CASES, ids=[c[0] for c in CASES])
def test_per_photo_masks_are_unchanged(case: str, rel: str, params: dict[str, object]) -> None:
    if not _photo(rel).exists():
        pytest.skip(f"shared example photo {rel} not found (set GLOPER_EXAMPLES_DIR)")
    golden, exact = _golden_for_this_cpu()
    if not exact:
        warnings.warn(f"no golden file made on this kind of CPU ({_fingerprint()}): {case} is compared within "
                      f"{OTHER_CPU_TOLERANCE:.0%} of pixels, not exactly", stacklevel=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the file was made with one thread: same reduction order
    try:
        candidates, choice = _masks(rel, params)
    finally:
        torch.set_num_threads(threads)
    names = sorted(k.split(":", 2)[2] for k in golden.files if k.startswith(f"{case}:mask:"))
    assert sorted(candidates) == names
    assert choice == str(golden[f"{case}:choice"])
    for name in names:
        shape = tuple(int(v) for v in golden[f"{case}:shape:{name}"])
        want = np.unpackbits(golden[f"{case}:mask:{name}"])[: shape[0] * shape[1]].reshape(shape).astype(bool)
        got = candidates[name]
        differ = int((want != got).sum())
        if exact:
            assert differ == 0, f"{case} {name}: {differ} pixels differ from the golden mask"
        else:  # another CPU: float kernels may round differently
            assert differ <= OTHER_CPU_TOLERANCE * want.size, (
                f"{case} {name}: {differ} pixels differ (golden made on {golden['cpu']} {golden['isa']}, "
                f"this CPU {_fingerprint()})")


if __name__ == "__main__":
    _write()
    print(f"wrote {_golden_path(_fingerprint())}")
