"""ResNet-18 (torchvision) with the classifier removed: 512-d global-average-pooled features.

Weights never come from the network at run time: `imagenet` is read from the torch hub cache,
a path is loaded as a checkpoint (the MS-Celeb / Emotion-FAN ones come wrapped in
`{"state_dict": ...}` with `module.` prefixes and a differently sized `fc`, docs/reference.md §4/§6), and
`random` is a seeded initialisation for plumbing tests only (its features carry no expression
signal, docs/reference.md §9).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import MissingWeightsError, PipelineError
from pipeline.io import sha256_file

log = logging.getLogger(__name__)

IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


@dataclass
class LoadReport:
    weights: str
    sha256: str
    ignored: list[str]


def check_imagenet_available() -> Path:
    """The cached ImageNet file, or a MissingWeightsError saying exactly how to get it."""
    path = imagenet_path()
    if not path.is_file():
        raise MissingWeightsError(
            f"extract.weights=imagenet needs {IMAGENET_FILE} in the torch hub cache {path.parent}, and it is not "
            f"there (nothing is downloaded at run time).\n"
            f"On a machine with internet run:\n"
            f"  python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\"\n"
            f"and copy {path} to the same place here (or set TORCH_HOME), or download {IMAGENET_URL} into "
            f"{path.parent}. Alternatively pass a checkpoint path: --set extract.weights=/path/to/resnet18.pth")
    return path


def _unwrap(obj) -> dict[str, torch.Tensor]:
    """Accept plain state dicts and the usual wrappers ({"state_dict": ...}, {"model": ...})."""
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PipelineError("checkpoint does not contain a state dict of tensors")
    return obj


def load_checkpoint(model: nn.Module, path: Path) -> list[str]:
    """Load a torchvision-compatible ResNet-18 state dict; return the ignored keys.

    Strips `module.` (DataParallel) prefixes, ignores `fc` (the classifier is removed anyway) and
    keys that are not part of the backbone; refuses a checkpoint that leaves any backbone tensor
    uninitialised or has one of the wrong shape.
    """
    from pipeline.backbones.plugins import read_state_dict  # the one safe reader (imports this module)

    state = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and not k.startswith("fc.")}
    ignored = sorted(k for k in state if k not in usable)
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in usable.items() if v.shape != own[k].shape]
    missing = sorted(k for k in own if not k.startswith("fc.") and k not in usable)
    if wrong or missing:
        raise MissingWeightsError(f"checkpoint {path} does not fit ResNet-18: "
                            + (f"missing backbone tensors {missing[:8]}{' ...' if len(missing) > 8 else ''} " if missing else "")
                            + (f"wrong shapes {wrong[:4]}" if wrong else ""))
    model.load_state_dict(usable, strict=False)
    return ignored


def build_resnet18(weights: str, seed: int = 0) -> tuple[nn.Module, LoadReport]:
    """ResNet-18 whose forward returns (B, 512) pooled features; `weights`: imagenet | random | path."""
    from torchvision.models import resnet18

    torch.manual_seed(seed)  # `random` weights are seeded; others overwrite every backbone tensor
    model = resnet18(weights=None)
    if weights == "imagenet":
        path = check_imagenet_available()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        report = LoadReport("imagenet:IMAGENET1K_V1", sha256_file(path), [])
    elif weights == "random":
        report = LoadReport(f"random:seed={seed}", "", [])
        log.warning("extract.weights=random: features carry no expression signal (plumbing tests only)")
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"extract.weights: checkpoint {path} not found")
        ignored = load_checkpoint(model, path)
        if ignored:
            log.warning("checkpoint %s: ignored %d keys not in the backbone: %s", path.name, len(ignored),
                        ", ".join(ignored[:10]) + (" ..." if len(ignored) > 10 else ""))
        report = LoadReport(f"checkpoint:{path.name}", sha256_file(path), ignored)
    model.fc = nn.Identity()
    return model.eval(), report
