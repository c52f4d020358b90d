"""Per-photo GloPER's masks stay bit-for-bit what they were when its code was one package.

``tests/data/gloper_golden-<CPU vendor>.npz`` holds every candidate mask (packed bits)
that per-photo GloPER made on two shared photos, under the CPU profile and under the stacked
(vmap) engine, with the code as it stood before GloPER's modules were merged into
``gloper_jobs.methods.gloper`` (commit dcc7af8): ``AuthenticAMD`` made on an AMD EPYC,
``GenuineIntel`` on an Intel Xeon (both AVX-512, 2 cores). A refactor of the network, the
loss, the training loop or the read-out that changes one pixel fails here.

Float kernels differ between CPUs: oneDNN and OpenCV pick code paths by instruction set and
by vendor (the same AVX-512 label gave up to 177 of 16,384 pixels apart between the two
files), so the comparison is exact with the file of this CPU's vendor and instruction set
(recorded in it) and within 2 % of pixels against the AMD file elsewhere, which the test
states when it applies.

Regenerate only for an intended change of the masks, on each kind of CPU:
``python -m tests.test_gloper_golden`` (writes this CPU's file from the code as it is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gloper_jobs.data.images import load_image
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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _golden_path(vendor: str) -> Path:
    return DATA / f"gloper_golden-{vendor}.npz"


def _write() -> None:
    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {"isa": np.array(_isa()), "cpu": np.array(_vendor())}
    for case, rel, params in CASES:
        candidates, choice = _masks(rel, params)
        arrays[f"{case}:choice"] = np.array(choice)
        for name, mask in candidates.items():
            arrays[f"{case}:shape:{name}"] = np.array(mask.shape)
            arrays[f"{case}:mask:{name}"] = np.packbits(mask)
    DATA.mkdir(exist_ok=True)
    np.savez_compressed(_golden_path(_vendor()), **arrays)  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("case,rel,params", CASES, ids=[c[0] for c in CASES])
def test_per_photo_masks_are_unchanged(case: str, rel: str, params: dict[str, object]) -> None:
    if not _photo(rel).exists():
        pytest.skip(f"shared example photo {rel} not found (set GLOPER_EXAMPLES_DIR)")
    own = _golden_path(_vendor())
    golden = np.load(own if own.exists() else _golden_path("AuthenticAMD"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the file was made with one thread: same reduction order
    try:
        candidates, choice = _masks(rel, params)
    finally:
        torch.set_num_threads(threads)
    names = sorted(k.split(":", 2)[2] for k in golden.files if k.startswith(f"{case}:mask:"))
    assert sorted(candidates) == names
    assert choice == str(golden[f"{case}:choice"])
    exact = str(golden["isa"]) == _isa() and str(golden["cpu"]) == _vendor()
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
                f"this CPU {_vendor()} {_isa()})")


if __name__ == "__main__":
    _write()
    print(f"wrote {_golden_path(_vendor())}")
