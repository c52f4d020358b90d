"""The pretrained baselines (SAM, CLIPSeg, DINOv2) with tiny random models of the real
architectures, loaded from disk through the project's own loading code.

The registry-wide contract (names, shapes, foreground, determinism) runs over these
three in tests/test_methods.py; here: what is specific to each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gloper_jobs import defaults
from gloper_jobs.data.images import resize_mask, resize_rgb_uint8
from gloper_jobs.exceptions import (
    ConfigurationError,
    DeviceOutOfMemoryError,
    InvalidParameterError,
    WeightsMissingError,
)
from gloper_jobs.methods import SegmentContext, create_segmenter
from gloper_jobs.methods import torchvision_fallback as tvf
from gloper_jobs.methods.cache import SegmenterCache
from gloper_jobs.methods.dino import pca_rgb
from gloper_jobs.methods.registry import REGISTRY, build_segmenter
from gloper_jobs.methods.sam import SAM_ARCHITECTURES, infer_architecture, rank_masks
from gloper_jobs.settings import Settings
from tests import deep_fixtures as tiny

REPO = Path(__file__).resolve().parents[1]
DEEP = ("sam", "clipseg", "dino")


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic striped photo (``96x128x3 uint8``) and an elliptic foreground (``96x128 bool``)."""
    yy, xx = np.mgrid[0:96, 0:128]
    stripes = ((xx + yy // 2) // 8) % 2 == 0
    img = np.where(stripes[..., None], [30, 25, 20], [220, 210, 190]).astype(np.uint8)
    img = np.clip(img + np.random.default_rng(1).integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    fg = ((yy - 48) / 40.0) ** 2 + ((xx - 64) / 55.0) ** 2 < 1
    return img, fg


def segment(name: str, photo: tuple[np.ndarray, np.ndarray], species: str | None = "Zebra", **params):
    seg = create_segmenter(name, **{**tiny.tiny_params(name), **params})
    return seg, seg.segment(*photo, SegmentContext(species=species))


# --- routing and profiles (import hygiene: tests/test_imports.py) ----------------------------------------------------

def test_pretrained_baselines_route_to_gpu_and_keep_weight_paths_out_of_identity() -> None:
    for name in DEEP:
        cls = REGISTRY[name]
        assert cls.device_class == "gpu"
        ident = create_segmenter(name, weights="/somewhere", device="cpu", allow_downloads=True).identity()
        assert ident["method"] == name
        assert not {"weights", "weights_dir", "device", "allow_downloads"} & set(ident)


def test_paper_profiles_are_the_papers_settings() -> None:
    sam = create_segmenter("sam", profile="paper").params
    assert (sam.model_type, sam.points_per_side, sam.crop_n_layers, sam.size) == ("vit_h", 64, 2, 1024)
    clip = create_segmenter("clipseg", profile="paper").params
    assert (clip.prompt, clip.threshold) == ("pattern of {species}", 0.3)
    dino = create_segmenter("dino", profile="paper").params
    assert (dino.input_size, dino.layers, dino.threshold) == (1008, 4, 0.5)


# --- torchvision fallback ---------------------------------------------------------

def _reference_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """Brute-force greedy NMS: the definition, without any vectorisation."""
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    keep: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_fallback_nms_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2)).astype(np.float32)
    wh = rng.uniform(5, 40, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.permutation(300).astype(np.float32)  # distinct scores: a unique answer
    for thr in (0.3, 0.7):
        got = tvf.nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
        assert got == _reference_nms(boxes, scores, thr)
    idxs = torch.from_numpy(rng.integers(0, 3, 300))
    got = set(tvf.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), idxs, 0.5).tolist())
    want = set()
    for c in range(3):
        sel = np.flatnonzero(idxs.numpy() == c)
        want |= {int(sel[k]) for k in _reference_nms(boxes[sel], scores[sel], 0.5)}
    assert got == want
    assert tvf.box_area(torch.tensor([[1.0, 2.0, 4.0, 6.0]])).tolist() == [12.0]
    assert tvf.nms(torch.zeros((0, 4)), torch.zeros(0), 0.5).numel() == 0


def test_fallback_resize_is_pil_bilinear() -> None:
    arr = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    out = np.asarray(tvf.resize(tvf.to_pil_image(arr), (60, 20)))
    assert out.shape == (60, 20, 3)
    from PIL import Image

    assert np.array_equal(out, np.asarray(Image.fromarray(arr).resize((20, 60), Image.Resampling.BILINEAR)))


@pytest.mark.skipif(tvf._torchvision_works(), reason="torchvision's compiled ops load here")
def test_segment_anything_imports_without_torchvision_and_leaves_no_trace() -> None:
    code = (
        "import sys\n"
        "from gloper_jobs.methods import torchvision_fallback as t\n"
        "sa = t.import_segment_anything()\n"
        "from segment_anything.automatic_mask_generator import batched_nms\n"
        "print(t.backend, batched_nms is t.batched_nms, 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["fallback", "True", "False"], out.stderr


# --- SAM ----------------------------------------------------------------------------

def test_sam_architecture_is_read_from_the_checkpoint() -> None:
    tvf.import_segment_anything()
    from segment_anything.build_sam import _build_sam

    for model_type, (embed, depth, heads, glob) in SAM_ARCHITECTURES.items():
        with torch.device("meta"):  # shapes only, no memory
            state = _build_sam(embed, depth, heads, list(glob)).state_dict()
        assert infer_architecture(state) == (embed, depth, heads, glob), model_type


def test_sam_candidates_rank_masks_by_area() -> None:
    fg = np.zeros((8, 8), bool)
    fg[1:7, 1:7] = True
    big, mid, small = (np.zeros((8, 8), bool) for _ in range(3))
    big[:, :5] = True
    mid[5:, 5:] = True
    small[0, 7] = True  # outside the foreground
    c = rank_masks([small, big, mid], fg)
    assert np.array_equal(c["largest"], big & fg)
    assert np.array_equal(c["second_largest"], mid & fg)
    assert np.array_equal(c["rest"], (mid | small) & fg)
    assert np.array_equal(c["rest_complement"], fg & ~(mid | small))
    none = rank_masks([], fg)
    assert not none["largest"].any() and not none["rest"].any() and np.array_equal(none["rest_complement"], fg)


def test_sam_runs_on_the_blacked_out_photo(photo, monkeypatch) -> None:
    tvf.import_segment_anything()
    from segment_anything import SamAutomaticMaskGenerator

    seen: list[np.ndarray] = []
    original = SamAutomaticMaskGenerator.generate

    def spy(self, image):
        seen.append(image.copy())
        assert (self.points_per_batch, self.crop_n_layers) == (64, 0)
        return original(self, image)

    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", spy)
    seg, out = segment("sam", photo)
    s = seg.params.size
    fg = resize_mask(photo[1], (s, s))
    (given,) = seen
    assert given.shape == (s, s, 3) and given.dtype == np.uint8
    assert not given[~fg].any()
    assert np.array_equal(given[fg], resize_rgb_uint8(photo[0], (s, s))[fg])
    assert list(out.candidates) == ["largest", "second_largest", "rest", "rest_complement"]
    assert out.info["n_masks"] >= 2 and out.candidates["largest"].sum() >= out.candidates["second_largest"].sum()
    assert np.array_equal(out.candidates["rest"] | out.candidates["rest_complement"], fg)
    assert out.choice in ("rest", "rest_complement")  # "darker" picks one of the two
    assert out.info["architecture"].startswith("custom(embed=32, depth=2")


def test_sam_refuses_bad_checkpoints_and_one_of_another_type(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "sam.pth"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 64, 64, 8)}, bad)
    seg = create_segmenter("sam", weights=str(bad), device="cpu")
    with pytest.raises(WeightsMissingError, match="not a SAM image encoder"):
        seg.load()
    # pretend the tiny encoder were the published vit_l: asking for vit_b must fail
    monkeypatch.setitem(SAM_ARCHITECTURES, "vit_l", (32, 2, 2, (1,)))
    with pytest.raises(ConfigurationError, match="is a SAM vit_l checkpoint but model_type=vit_b"):
        create_segmenter("sam", **tiny.tiny_params("sam")).load()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMissingError, match="not a readable SAM checkpoint"):
        create_segmenter("sam", weights=str(tmp_path / "junk.pth"), device="cpu").load()


def test_missing_weights_name_the_file_the_source_and_the_variable(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsMissingError) as info:
        create_segmenter("sam", profile="paper", weights_dir=str(empty), device="cpu").load()
    msg = str(info.value)
    for part in ("sam_vit_h_4b8939.pth", "https://dl.fbaipublicfiles.com/segment_anything/",
                 "GLOPER_SAM_CHECKPOINT", "GLOPER_ALLOW_DOWNLOADS", str(empty)):
        assert part in msg
    with pytest.raises(WeightsMissingError) as info:
        create_segmenter("clipseg", weights=str(empty), device="cpu").load()
    for part in ("https://huggingface.co/CIDAS/clipseg-rd64-refined", "GLOPER_CLIPSEG_WEIGHTS"):
        assert part in str(info.value)
    with pytest.raises(WeightsMissingError) as info:
        create_segmenter("dino", weights=str(empty), device="cpu").load()
    for part in ("dinov2_vitg14_reg4_pretrain.pth", "GLOPER_DINO_WEIGHTS", "dl.fbaipublicfiles.com/dinov2"):
        assert part in str(info.value)
    with pytest.raises(WeightsMissingError) as info:  # unset: the weights folder, then the caches
        create_segmenter("dino", weights_dir=str(empty), device="cpu").load()
    for part in (str(empty / "dinov2_vitg14_reg4_pretrain.pth"), str(empty / "models--facebook--dinov2-with-registers-giant"),
                 "Hugging Face cache", "GLOPER_DINO_WEIGHTS"):
        assert part in str(info.value)
    with pytest.raises(WeightsMissingError, match="GLOPER_SAM_CHECKPOINT=.*does not exist"):
        create_segmenter("sam", weights=str(tmp_path / "nope.pth"), device="cpu").load()


def test_downloads_only_when_allowed(tmp_path, monkeypatch, photo) -> None:
    server = tmp_path / "server"
    published = tiny.tiny_sam(server, defaults.SAM_CHECKPOINTS["vit_b"])
    monkeypatch.setattr(defaults, "SAM_URL", server.as_uri() + "/{filename}")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsMissingError, match="GLOPER_ALLOW_DOWNLOADS"):
        create_segmenter("sam", weights_dir=str(cache), device="cpu").load()
    assert not cache.exists()
    params = {**tiny.TINY_PARAMS["sam"], "weights_dir": str(cache), "device": "cpu", "allow_downloads": True}
    seg = create_segmenter("sam", **params)
    seg.load()
    fetched = cache / defaults.SAM_CHECKPOINTS["vit_b"]
    assert seg.checkpoint == fetched and fetched.read_bytes() == published.read_bytes()
    # found in the weights folder from now on, without downloading
    monkeypatch.setattr(defaults, "SAM_URL", "http://127.0.0.1:9/{filename}")
    params["allow_downloads"] = False
    again = create_segmenter("sam", **params)
    assert again.segment(*photo).candidates.keys() == seg.segment(*photo).candidates.keys()


# --- CLIPSeg -----------------------------------------------------------------------

def test_clipseg_prompt_names_the_species(photo) -> None:
    _, zebra = segment("clipseg", photo, "Zebra")
    assert zebra.info["prompt"] == "pattern of Zebra"
    assert list(zebra.candidates) == ["pattern"] and zebra.choice == "pattern"
    _, unknown = segment("clipseg", photo, None)
    assert unknown.info["prompt"] == "pattern of animal"
    _, custom = segment("clipseg", photo, "Tiger", prompt="the {species}'s stripes", fallback_species="cat")
    assert custom.info["prompt"] == "the Tiger's stripes"
    for bad in ("pattern of zebra", "pattern of {animal}", "pattern {species} {0}"):
        with pytest.raises(InvalidParameterError, match="prompt"):
            create_segmenter("clipseg", prompt=bad)


def test_clipseg_prompt_reaches_the_model(photo, monkeypatch) -> None:
    seg, _ = segment("clipseg", photo)
    model, processor = seg.load()
    texts: list = []
    original = type(processor).__call__

    def spy(self, *args, **kwargs):
        texts.append(kwargs.get("text"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(processor), "__call__", spy)
    seg.segment(*photo, SegmentContext(species="Giraffe"))
    assert texts == [["pattern of Giraffe"]]
    ids = processor.tokenizer("pattern of Giraffe")["input_ids"]
    assert processor.tokenizer.decode(ids, skip_special_tokens=True).lower() == "pattern of giraffe"


def test_clipseg_threshold_and_foreground(photo) -> None:
    seg, low = segment("clipseg", photo, threshold=0.05)
    _, high = segment("clipseg", photo, threshold=0.9)
    fg = resize_mask(photo[1], (seg.params.size,) * 2)
    assert high.candidates["pattern"].sum() < low.candidates["pattern"].sum()
    assert not (high.candidates["pattern"] & ~low.candidates["pattern"]).any()
    assert not (low.candidates["pattern"] & ~fg).any()


def test_clipseg_loads_from_a_hub_cache_folder(tmp_path, photo) -> None:
    cache = tiny.as_hub_cache(tiny.tiny_weights("clipseg"), tmp_path / "hub", defaults.CLIPSEG_HUB_ID)
    _, from_cache = segment("clipseg", photo, weights=str(cache))
    _, from_folder = segment("clipseg", photo)
    assert np.array_equal(from_cache.candidates["pattern"], from_folder.candidates["pattern"])
    # unset: the weights folder is searched as a hub cache too
    _, from_weights_dir = segment("clipseg", photo, weights="", weights_dir=str(cache))
    assert np.array_equal(from_weights_dir.candidates["pattern"], from_folder.candidates["pattern"])


# --- DINOv2 -------------------------------------------------------------------------

def test_dino_torch_hub_and_transformers_formats_agree(photo) -> None:
    hub, out_hub = segment("dino", photo)
    hf, out_hf = segment("dino", photo, weights=str(tiny.tiny_weights("dino-transformers")))
    assert hub.weights_format == "torch hub" and hf.weights_format == "transformers"
    np.testing.assert_allclose(hub.features(photo[0]), hf.features(photo[0]), rtol=1e-4, atol=1e-5)
    assert list(out_hub.candidates) == ["mask", "inverse"]
    for n in out_hub.candidates:
        assert np.array_equal(out_hub.candidates[n], out_hf.candidates[n])


def test_dino_finds_the_hub_file_in_a_folder_and_in_the_weights_dir(photo) -> None:
    folder = tiny.tiny_weights("dino").parent
    _, by_folder = segment("dino", photo, weights=str(folder))
    seg, by_dir = segment("dino", photo, weights="", weights_dir=str(folder))
    assert seg.weights_format == "torch hub"
    assert np.array_equal(by_folder.candidates["mask"], by_dir.candidates["mask"])


def test_dino_mask_and_inverse_split_the_foreground(photo) -> None:
    seg, out = segment("dino", photo)
    fg = resize_mask(photo[1], (seg.params.size,) * 2)
    mask, inv = out.candidates["mask"], out.candidates["inverse"]
    assert not (mask & inv).any() and np.array_equal(mask | inv, fg)
    feats = seg.features(photo[0])
    assert feats.shape == (112 // 14, 112 // 14, 64) and feats.dtype == np.float32
    _, low = segment("dino", photo, threshold=0.0)
    assert np.array_equal(low.candidates["mask"], fg & (low.candidates["mask"] | ~fg))
    assert low.candidates["mask"].sum() >= mask.sum()
    with pytest.raises(InvalidParameterError, match="input_size"):
        create_segmenter("dino", input_size=1000)
    with pytest.raises(InvalidParameterError, match="only 4 blocks"):
        segment("dino", photo, layers=5)


def test_pca_is_deterministic_and_sign_fixed() -> None:
    feats = np.random.default_rng(0).normal(size=(6, 6, 20)).astype(np.float32)
    a = pca_rgb(feats)
    assert a.shape == (6, 6, 3) and a.min() == 0.0 and a.max() == pytest.approx(1.0)
    # the patches' order does not change any patch's colour (signs fixed by the loadings,
    # not by whatever sign the SVD happens to return)
    perm = np.random.default_rng(1).permutation(36)
    shuffled = pca_rgb(feats.reshape(36, 20)[perm].reshape(6, 6, 20))
    np.testing.assert_allclose(shuffled.reshape(36, 3), a.reshape(36, 3)[perm], atol=1e-5)
    # negated features have the same components, so the projections negate: 1 - image
    np.testing.assert_allclose(pca_rgb(-feats), 1 - a, atol=1e-5)


# --- settings, cache, memory ----------------------------------------------------------

def test_settings_supply_weights_device_and_downloads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLOPER_SAM_CHECKPOINT", str(tiny.tiny_weights("sam")))
    monkeypatch.setenv("GLOPER_CLIPSEG_WEIGHTS", str(tiny.tiny_weights("clipseg")))
    monkeypatch.setenv("GLOPER_DINO_WEIGHTS", str(tiny.tiny_weights("dino")))
    monkeypatch.setenv("GLOPER_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("GLOPER_ALLOW_DOWNLOADS", "1")
    monkeypatch.setenv("GLOPER_DEVICE", "cpu")
    settings = Settings.from_env()
    for name in DEEP:
        seg = build_segmenter(name, settings, params=tiny.TINY_PARAMS[name])
        p = seg.params
        assert p.weights == str(getattr(settings, seg.weights_setting))
        assert (p.device, p.allow_downloads, p.weights_dir) == ("cpu", True, str(tmp_path / "w"))
        explicit = build_segmenter(name, settings, params={"weights": "/x", "allow_downloads": False})
        assert explicit.params.weights == "/x" and explicit.params.allow_downloads is False
    monkeypatch.setenv("GLOPER_ALLOW_DOWNLOADS", "maybe")
    with pytest.raises(ConfigurationError, match="GLOPER_ALLOW_DOWNLOADS"):
        Settings.from_env()


def test_weights_load_once_per_process_and_close_on_eviction(photo) -> None:
    built: list = []

    def builder(method, profile, params):
        seg = create_segmenter(method, profile, **params)
        built.append(seg)
        return seg

    cache = SegmenterCache(builder, capacity=1)
    first = cache.get("dino", None, tiny.tiny_params("dino"))
    first.segment(*photo)
    model = first.load()
    assert cache.get("dino", None, tiny.tiny_params("dino")) is first and first.load() is model
    cache.get("clipseg", None, tiny.tiny_params("clipseg")).segment(*photo)
    assert not first.loaded and built[1].loaded  # one large model per process
    cache.clear()
    assert not built[1].loaded


def test_out_of_gpu_memory_names_the_setting_to_lower(photo, monkeypatch) -> None:
    seg = create_segmenter("dino", **tiny.tiny_params("dino"))
    model = seg.load()

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "forward", oom)
    with pytest.raises(DeviceOutOfMemoryError, match="input_size"):
        seg.segment(*photo)
    sam = create_segmenter("sam", **tiny.tiny_params("sam"))
    monkeypatch.setattr(sam.load(), "forward", oom)
    monkeypatch.setattr(type(sam.load().image_encoder), "forward", oom)
    with pytest.raises(DeviceOutOfMemoryError, match="points_per_batch"):
        sam.segment(*photo)


def test_weight_settings_are_documented() -> None:
    doc = (REPO / "gloper_jobs" / "settings.py").read_text()
    for var in ("GLOPER_SAM_CHECKPOINT", "GLOPER_CLIPSEG_WEIGHTS", "GLOPER_DINO_WEIGHTS",
                "GLOPER_WEIGHTS_DIR", "GLOPER_ALLOW_DOWNLOADS"):
        assert var in doc
    assert json.loads(json.dumps(Settings.from_env().model_dump(mode="json")))["allow_downloads"] is False


# --- benchmark --------------------------------------------------------------------------

def test_bench_writes_dice_and_seconds_per_method(examples_dir, models_dir, tmp_path) -> None:
    """`python -m bench.deep_baselines` with the tiny models: the bench's whole path, run as a command."""
    out = tmp_path / "deep.json"
    params = [f"--param={m}.{k}={v}" for m in ("sam", "clipseg", "dino") for k, v in tiny.tiny_params(m).items()]
    proc = subprocess.run([sys.executable, "-m", "bench.deep_baselines", "--dataset", str(examples_dir),
                           "--limit", "1", "--out", str(out), *params],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert {m: r["weights"] for m, r in report["methods"].items()} == {
        m: tiny.tiny_params(m)["weights"] for m in ("sam", "clipseg", "dino")}
    names = {"sam": {"largest", "second_largest", "rest", "rest_complement"}, "clipseg": {"pattern"},
             "dino": {"mask", "inverse"}}
    for name, candidates in names.items():
        result = report["methods"][name]
        assert result["load_seconds"] > 0 and result["mean_seconds"] > 0
        (row,) = result["images"]
        assert set(row["dice"]) == candidates and 0 <= row["oracle_dice"] <= 1
        assert row["oracle_dice"] == max(row["dice"].values()) and row["choice"] in candidates
    assert report["methods"]["clipseg"]["images"][0]["info"]["prompt"] == f"pattern of {row['species']}"
