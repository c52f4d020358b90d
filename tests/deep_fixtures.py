"""Tiny, randomly initialised SAM, CLIPSeg and DINOv2 models of the real architectures.

Each builder saves its model to disk in the format the published weights use
(SAM: a ``.pth`` state dict; CLIPSeg: the files of ``CIDAS/clipseg-rd64-refined``;
DINOv2: a torch hub ``.pth`` and a ``save_pretrained`` folder) so the project's
own loading code reads them back. :func:`tiny_params` gives fast parameters that
point at them, for the registry-wide tests (see ``tests/method_params.py``).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

SEED = 0
CLIPSEG_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt",
                 "tokenizer_config.json", "preprocessor_config.json")


@functools.cache
def _root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="gloper-tiny-models-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def tiny_sam(folder: Path, name: str = "tiny_sam.pth") -> Path:
    """A SAM with a two-layer, 32-wide ViT image encoder (block 1 global), saved as ``.pth``."""
    from gloper_jobs.methods.torchvision_fallback import import_segment_anything

    import_segment_anything()
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(SEED)
    sam = _build_sam(32, 2, 2, [1], checkpoint=None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(sam.state_dict(), path)
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable character table (the base of a byte-level BPE vocab)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def tiny_clipseg(folder: Path) -> Path:
    """A CLIPSeg (2-layer text, 3-layer 32-wide vision, 64 px) with a byte-level CLIP
    tokenizer, written as the published repository's files."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    config = CLIPSegConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                       "num_attention_heads": 2, "image_size": 64, "patch_size": 16},
        projection_dim=16, extract_layers=[0, 1, 2], reduce_dim=16,
        decoder_num_attention_heads=2, decoder_intermediate_size=32,
    )
    torch.manual_seed(SEED)
    model = CLIPSegForImageSegmentation(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 77, "tokenizer_class": "CLIPTokenizer",
         "processor_class": "CLIPSegProcessor", "unk_token": "<|endoftext|>",
         "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
         "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
         "processor_class": "CLIPSegProcessor", "resample": 2, "size": 64}))
    return folder


def as_hub_cache(folder: Path, cache: Path, repo_id: str, revision: str = "0123456789abcdef") -> Path:
    """Lay ``folder``'s files out as a Hugging Face hub cache holding ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        shutil.copy2(f, snap / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return cache


def tiny_dino_model() -> Any:
    """A DINOv2 with 4 registers: 4 SwiGLU blocks, 64 wide, one 64-wide head, 56 px grid."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=1, use_swiglu_ffn=True,
        num_register_tokens=4, image_size=56, patch_size=14, layerscale_value=0.5,
    )
    torch.manual_seed(SEED)
    model = Dinov2WithRegistersModel(config).eval()
    with torch.no_grad():  # random tokens and layer scales, so every tensor matters
        for name, tensor in model.named_parameters():
            if "token" in name or "position" in name or "lambda" in name:
                tensor.normal_(0, 0.5)
    return model


def tiny_dino_transformers(folder: Path) -> Path:
    """:func:`tiny_dino_model` as a ``save_pretrained`` folder."""
    tiny_dino_model().save_pretrained(folder)
    return folder


def tiny_dino_hub(path: Path) -> Path:
    """:func:`tiny_dino_model` as a torch hub checkpoint (``blocks.N.attn.qkv`` ... names)."""
    sd = tiny_dino_model().state_dict()
    hub: dict[str, torch.Tensor] = {
        "cls_token": sd["embeddings.cls_token"], "mask_token": sd["embeddings.mask_token"],
        "register_tokens": sd["embeddings.register_tokens"], "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"],
    }
    for i in range(4):
        pre, out = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            hub[out + f"attn.qkv.{kind}"] = torch.cat([sd[pre + f"attention.{n}_proj.{kind}"] for n in "qkv"])
            hub[out + f"attn.proj.{kind}"] = sd[pre + f"attention.o_proj.{kind}"]
            hub[out + f"mlp.w12.{kind}"] = torch.cat([sd[pre + f"mlp.gate_proj.{kind}"], sd[pre + f"mlp.up_proj.{kind}"]])
            hub[out + f"mlp.w3.{kind}"] = sd[pre + f"mlp.down_proj.{kind}"]
            hub[out + f"norm1.{kind}"] = sd[pre + f"norm1.{kind}"]
            hub[out + f"norm2.{kind}"] = sd[pre + f"norm2.{kind}"]
        hub[out + "ls1.gamma"] = sd[pre + "layer_scale1.lambda1"]
        hub[out + "ls2.gamma"] = sd[pre + "layer_scale2.lambda1"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(hub, path)
    return path


@functools.cache
def tiny_weights(name: str) -> Path:
    """Build (once per process) the tiny weights of method ``name``; returns what ``weights`` takes."""
    root = _root()
    if name == "sam":
        return tiny_sam(root / "sam")
    if name == "clipseg":
        return tiny_clipseg(root / "clipseg")
    if name == "dino":
        return tiny_dino_hub(root / "dino" / "dinov2_vitg14_reg4_pretrain.pth")
    if name == "dino-transformers":
        return tiny_dino_transformers(root / "dino-transformers")
    raise KeyError(name)


#: fast settings of the pretrained baselines (without the weights)
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "sam": {"size": 64, "points_per_side": 2, "crop_n_layers": 0, "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0},
    "clipseg": {"size": 64},
    "dino": {"size": 64, "input_size": 112},
}


def tiny_params(name: str) -> dict[str, Any]:
    """Fast parameters for ``name`` on CPU, pointing at its tiny weights."""
    return {**TINY_PARAMS[name], "weights": str(tiny_weights(name)), "device": "cpu",
            "allow_downloads": False}
