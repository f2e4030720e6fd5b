"""`timm:<model_name>`: any timm image model as a frozen per-frame encoder.

Features are timm's pre-logits (`forward_head(forward_features(x), pre_logits=True)`), the vector
its classifier would read: 768 for a ViT-B, 1280 for EfficientNet-B0 (HSEmotion's), 768 for
ConvNeXt-T. Input size, mean/std and interpolation come from the model's pretrained config
(`timm.data.resolve_model_data_config`), the tag included (`convnext_tiny.fb_in22k` may differ
from `convnext_tiny`). The classifier is removed (`num_classes=0`), so a checkpoint's head of any
size is ignored.

Weights (`extract.weights`): a local file (.safetensors/.pth/.bin; a state dict in timm's naming,
or one the model's own `checkpoint_filter_fn` converts, e.g. original ViT/CLIP layouts);
`pretrained` (the file of the model's `hf_hub_id` in the local Hugging Face cache); or `random`
(seeded; timing and plumbing only).
"""
from __future__ import annotations

import difflib
import importlib
import logging

import torch
from torch import nn

from pipeline.backbones.plugins import (PluginBackbone, checkpoint_path, hub_cached_file, import_library,
                                        load_matching, read_state_dict, weights_record)
from pipeline.errors import ConfigError, MissingWeightsError

log = logging.getLogger(__name__)
MARGIN = 0.0  # ImageNet / face-classification CNNs: the same tight ArcFace template as ResNet-18
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmFeatures(nn.Module):
    """(B, 3, S, S) normalised crops -> (B, D) float32 pre-logits of a timm model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # (B, D)
        return feats.float()


def unknown_model_error(timm, name: str) -> ConfigError:
    """The close matches among timm's model names (tags included), so a typo is one look away."""
    arch = name.split(".")[0]
    names = timm.list_models() + timm.list_models(pretrained=True)
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.6) or difflib.get_close_matches(arch, names, n=6, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else "; `python -c \"import timm; print(timm.list_models('*vit*'))\"` lists them"
    return ConfigError([f"extract.backbone: timm has no model {name!r}{hint}"])


def create(timm, name: str) -> nn.Module:
    if not timm.is_model(name):
        raise unknown_model_error(timm, name)
    try:
        return timm.create_model(name, pretrained=False, num_classes=0)  # pretrained=False: never downloads
    except RuntimeError as err:  # an unknown pretrained tag on a known architecture
        if "pretrained tag" not in str(err):
            raise
        raise unknown_model_error(timm, name) from err


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    heads = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{h}." for h in ((heads,) if isinstance(heads, str) else heads))


def load_weights(model: nn.Module, name: str, weights: str) -> tuple[str, str, str, list[str]]:
    """Load a local checkpoint into `model`; (description, file name, sha256, ignored keys)."""
    if weights == "pretrained" or weights.startswith("pretrained:"):
        hub_id = model.pretrained_cfg.get("hf_hub_id")
        if not hub_id:
            raise MissingWeightsError(f"timm:{name} has no Hugging Face weights in its pretrained config; "
                                      f"pass a checkpoint file: --set extract.weights=/path/to/model.safetensors")
        path = hub_cached_file(hub_id, HUB_FILES, f"timm:{name}")
        kind, label = "pretrained", f"{hub_id.rstrip('/')}/{path.name}"
    else:
        path, kind = checkpoint_path(weights, f"timm:{name}"), "checkpoint"
        label = path.name
    state = read_state_dict(path)
    own = model.state_dict()
    heads = classifier_prefixes(model)
    if any(k not in state for k in own):
        # Checkpoints in an original layout (JAX ViT, OpenAI CLIP, ...): the model's own converter.
        mod = importlib.import_module(type(model).__module__)
        convert = getattr(mod, "checkpoint_filter_fn", None)
        if convert is not None:
            try:
                converted = convert(state, model)
            except (KeyError, RuntimeError, ValueError, AttributeError) as err:
                log.info("checkpoint_filter_fn of %s did not apply to %s: %s", mod.__name__, path.name, err)
            else:
                if sum(k in converted for k in own) > sum(k in state for k in own):
                    state = converted
    ignored = load_matching(model, state, path=path, arch=f"timm:{name}", ignore_prefixes=heads)
    desc, file_name, sha = weights_record(path, kind, label)
    return desc, file_name, sha, ignored


def build(name: str, weights: str, *, seed: int = 0, output: str = "pre_logits") -> PluginBackbone:
    """A frozen timm model for `timm:<name>`; raises before any video is read when it cannot be built."""
    timm = import_library("timm")
    from timm.data import resolve_model_data_config

    torch.manual_seed(seed)  # `random` weights are seeded; a checkpoint overwrites every tensor
    model = create(timm, name).eval()
    if weights == "random":
        desc, file_name, sha, ignored = f"random:seed={seed}", "", "", []
        log.warning("extract.weights=random: features carry no expression signal (timing and plumbing only)")
    else:
        desc, file_name, sha, ignored = load_weights(model, name, weights)
    data = resolve_model_data_config(model)  # input_size, interpolation, mean, std, crop_pct from pretrained_cfg
    size = int(data["input_size"][-1])
    module = TimmFeatures(model).eval()
    with torch.inference_mode():
        dim = int(module(torch.zeros(1, 3, size, size)).shape[-1])  # pre-logits width, whatever the head
    return PluginBackbone(module, dim, model.pretrained_cfg.get("architecture", name) + (
        f".{model.pretrained_cfg['tag']}" if model.pretrained_cfg.get("tag") else ""), "timm", timm.__version__,
        desc, file_name, sha, size, tuple(data["mean"]), tuple(data["std"]), str(data["interpolation"]), MARGIN,
        ignored, "pre_logits")
