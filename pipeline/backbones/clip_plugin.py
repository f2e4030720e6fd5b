"""`open_clip:<arch>`: the image tower of a CLIP model (ViT-B-16, ViT-L-14, ViT-L-14-336, ...) frozen.

Features (`extract.clip_features`): `embedding`, the image embedding CLIP compares with text
(512 for ViT-B/16, 768 for ViT-L/14; what A³lign-DFER and DFER-CLIP build on), or `pooled`, the
pooled token after `ln_post` and before the projection (768 / 1024; ViT towers only). Features are
not L2-normalised: the head sees the raw vectors. Preprocessing is CLIP's own
(`open_clip.get_model_preprocess_cfg`: size, mean, std, interpolation); an aligned square crop at
the model's size makes its resize + centre crop the identity, so only the normalisation remains.

Weights (`extract.weights`): a local checkpoint — a whole CLIP state dict (`visual.*` keys are
used, the text tower is ignored), an image-tower-only one, open_clip's HF files
(`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`); OpenAI's TorchScript `.pt` is
refused (loading it runs code) with the one-line export to a state dict; `pretrained:<tag>` (that tag's file in the local Hugging Face cache, e.g. `pretrained:openai`); or
`random`. OpenAI's weights were trained with QuickGELU: name the `-quickgelu` architecture
(`open_clip:ViT-B-16-quickgelu`) with them, or `pretrained:openai` does it for you.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from pipeline.backbones.plugins import (PluginBackbone, checkpoint_path, hub_cached_file, import_library,
                                        load_matching, read_state_dict, weights_record)
from pipeline.errors import ConfigError, MissingWeightsError

log = logging.getLogger(__name__)
# CLIP saw whole web images, faces with hair, chin and background, not the tight ArcFace template;
# 0.25 widens the crop by a quarter on each side of the template (Emotion-FAN's padding, docs/reference.md §4).
MARGIN = 0.25
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OUTPUTS = ("embedding", "pooled")


class ClipImageFeatures(nn.Module):
    """(B, 3, S, S) normalised crops -> (B, D) float32 CLIP image features."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.visual(x)
        return (out[0] if isinstance(out, tuple) else out).float()  # (B, D); towers returning tokens give (pooled, tokens)


class _DropRecords(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        # open_clip narrates model creation at INFO on the root logger; our own log line says what was built
        return record.levelno >= logging.WARNING and self.text not in record.getMessage()


def create(open_clip, arch: str, quick_gelu: bool) -> tuple[nn.Module, dict]:
    if arch.startswith(("hf-hub:", "local-dir:")) or open_clip.get_model_config(arch) is None:
        raise ConfigError([f"extract.backbone: open_clip has no built-in architecture {arch!r} "
                           f"(known: {', '.join(a for a in open_clip.list_models() if a.startswith('ViT-'))[:400]} ...)"])
    # pretrained=None: nothing is fetched; the weights are loaded below from a local file.
    # open_clip logs "initialized randomly" on the root logger: true here, and false a moment later.
    quiet = _DropRecords("No pretrained weights loaded")
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    finally:
        logging.getLogger().removeFilter(quiet)
    return model.visual, open_clip.get_model_preprocess_cfg(model)


def load_weights(open_clip, visual: nn.Module, arch: str, weights: str) -> tuple[str, str, str, list[str]]:
    if weights.startswith("pretrained"):
        tag = weights.partition(":")[2]
        cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
        if not cfg.get("hf_hub"):
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise MissingWeightsError(f"extract.weights={weights}: open_clip:{arch} has no Hugging Face weights "
                                      f"under that tag (tags: {', '.join(tags) or 'none'}); use pretrained:<tag> "
                                      f"or a checkpoint file")
        path = hub_cached_file(cfg["hf_hub"], HUB_FILES, f"open_clip:{arch} ({tag})")
        kind, label = "pretrained", f"{cfg['hf_hub'].rstrip('/')}/{path.name}"
    else:
        path, kind = checkpoint_path(weights, f"open_clip:{arch}"), "checkpoint"
        label = path.name
    state = read_state_dict(path)
    text: list[str] = []
    if any(k.startswith("visual.") for k in state):  # a whole CLIP model: keep the image tower
        text = sorted(k for k in state if not k.startswith("visual."))
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
        log.info("checkpoint %s: image tower only; %d text-tower keys left aside", path.name, len(text))
    ignored = load_matching(visual, state, path=path, arch=f"open_clip:{arch} image tower")
    desc, file_name, sha = weights_record(path, kind, label)
    return desc, file_name, sha, ignored


def build(arch: str, weights: str, *, seed: int = 0, output: str = "embedding") -> PluginBackbone:
    """A frozen CLIP image tower for `open_clip:<arch>`; raises before any video is read when it cannot be built."""
    open_clip = import_library("open_clip")
    if output not in OUTPUTS:
        raise ConfigError([f"extract.clip_features: must be one of {OUTPUTS}, got {output!r}"])
    tag = weights.partition(":")[2] if weights.startswith("pretrained:") else ""
    quick_gelu = bool(tag and open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    torch.manual_seed(seed)  # `random` weights are seeded; a checkpoint overwrites every tensor
    visual, pp = create(open_clip, arch, quick_gelu)
    if weights == "random":
        desc, file_name, sha, ignored = f"random:seed={seed}", "", "", []
        log.warning("extract.weights=random: features carry no expression signal (timing and plumbing only)")
    else:
        desc, file_name, sha, ignored = load_weights(open_clip, visual, arch, weights)
    if output == "pooled":
        if not isinstance(getattr(visual, "proj", None), torch.Tensor):
            raise ConfigError([f"extract.clip_features=pooled: open_clip:{arch}'s image tower has no separate "
                               f"projection (ViT towers only); use embedding"])
        visual.proj = None  # VisionTransformer.forward skips the projection when proj is None
    size = pp["size"]
    size = int(size if isinstance(size, int) else size[-1])
    module = ClipImageFeatures(visual).eval()
    with torch.inference_mode():
        dim = int(module(torch.zeros(1, 3, size, size)).shape[-1])
    return PluginBackbone(module, dim, arch + ("-quickgelu(forced)" if quick_gelu else ""), "open_clip",
                          open_clip.__version__, desc, file_name, sha, size, tuple(pp["mean"]), tuple(pp["std"]),
                          str(pp["interpolation"]), MARGIN, ignored, output)
