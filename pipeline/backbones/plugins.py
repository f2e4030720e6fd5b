"""Backbone plug-ins: `timm:<model_name>` and `open_clip:<arch>` image encoders, frozen, offline.

A plug-in module (`timm_plugin`, `clip_plugin`) turns a name and an `extract.weights` value into a
`PluginBackbone`: a module mapping normalised (B, 3, S, S) crops to (B, D) features, plus its
preprocessing (size, mean, std, interpolation, taken from the model's own pretrained config) and
provenance. This file holds what both share: reading a local checkpoint (.safetensors, .pth, .bin),
matching it to the architecture key by key, finding a file in the local Hugging Face cache, and the
messages for a missing library or checkpoint.

Nothing is ever downloaded: `HF_HUB_OFFLINE=1` is set before either library is imported, the models
are built with `pretrained=False` / `pretrained=None`, and the weights are loaded here.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from pipeline.backbones.resnet import _unwrap
from pipeline.errors import UNREADABLE_CHECKPOINT, MissingWeightsError, PipelineError
from pipeline.io import sha256_file

log = logging.getLogger(__name__)

# library prefix of `extract.backbone` -> (plug-in module, pip distribution, setup.cfg extra)
PLUGINS: dict[str, tuple[str, str, str]] = {
    "timm": ("pipeline.backbones.timm_plugin", "timm", "timm"),
    "open_clip": ("pipeline.backbones.clip_plugin", "open_clip_torch", "clip"),
}
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass
class PluginBackbone:
    """A built plug-in: `module` maps (B, 3, S, S) normalised crops to (B, dim) float32 features."""

    module: nn.Module
    dim: int
    model: str
    """The model name as the library knows it (`convnext_tiny.in12k_ft_in1k`, `ViT-L-14`)."""
    library: str
    library_version: str
    weights: str
    """`checkpoint:<file name>`, `pretrained:<hub id>/<file>` or `random:seed=N`."""
    weights_file: str
    weights_sha256: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    margin: float
    """Default `extract.margin` for this family (used when the parameter is null)."""
    ignored_keys: list[str] = field(default_factory=list)
    output: str = "pre_logits"

    def provenance(self) -> dict:
        return {"model": self.model, "library": self.library, "library_version": self.library_version,
                "weights_file": self.weights_file, "feature_output": self.output,
                "ignored_checkpoint_keys": len(self.ignored_keys)}


def split_backbone(name: str) -> tuple[str, str] | None:
    """`timm:convnext_tiny` -> ("timm", "convnext_tiny"); None for the built-in backbones."""
    lib, sep, model = name.partition(":")
    return (lib, model) if sep and lib in PLUGINS else None


def import_library(lib: str) -> ModuleType:
    """The plug-in's library, imported offline, or a MissingWeightsError naming the extra to install."""
    _, dist, extra = PLUGINS[lib]
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: nothing here asks the hub, and it must not
    try:
        return importlib.import_module(lib)
    except ImportError as err:
        raise MissingWeightsError(
            f"extract.backbone={lib}:... needs the `{dist}` library, which is not installed ({err}).\n"
            f"Install the extra: pip install -e \".[{extra}]\"  (or: pip install {dist})") from err


def build_plugin(backbone: str, weights: str, seed: int, output: str) -> PluginBackbone:
    lib, model = split_backbone(backbone) or (None, None)
    if lib is None:
        raise PipelineError(f"not a plug-in backbone: {backbone!r}")
    plugin = importlib.import_module(PLUGINS[lib][0])
    return plugin.build(model, weights, seed=seed, output=output)


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path(weights: str, arch: str) -> Path:
    """`extract.weights` as a local checkpoint file, or a MissingWeightsError naming it and the architecture."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"extract.weights: checkpoint {path} for {arch} not found "
                                  f"(nothing is downloaded at run time)")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise MissingWeightsError(f"extract.weights: {path} (for {arch}) is not a checkpoint file "
                                  f"(expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch checkpoint; `module.` prefixes and usual wrappers removed.

    Weights are data: torch files are read with `weights_only=True` and nothing else, so no code in
    the file runs. A TorchScript archive (OpenAI's original CLIP `.pt`) and a pickled model object are
    refused with the one-line export that turns them into a state dict (issue 29: `torch.jit.load`
    runs the archive's `__setstate__`, which can write files).
    """
    if _is_torchscript(path):
        raise MissingWeightsError(
            f"extract.weights: {path} is a TorchScript archive; it is not loaded, since loading one runs code "
            f"from the file. {_EXPORT_HINT.format(load='torch.jit.load', extra='', path=path, out=path.with_suffix('.pth').name)}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(str(path), device="cpu")
            except SafetensorError as err:
                raise ValueError(f"not a safetensors file: {err}") from err
        else:
            state = _unwrap(_safe_torch_load(path))
    except pickle.UnpicklingError as err:  # a whole pickled model: loading it would run its code
        raise MissingWeightsError(
            f"extract.weights: {path} is not a plain state dict (torch's safe loader refused it: a pickled "
            f"object, or not a checkpoint). A pickled model object is not loaded, since that would run code "
            f"from the file. {_EXPORT_HINT.format(load='torch.load', extra=', weights_only=False', path=path, out=path.with_suffix('.pth').name)}"
        ) from err
    except UNREADABLE_CHECKPOINT as err:  # empty (EOFError), text (KeyError), truncated (RuntimeError)
        raise MissingWeightsError(
            f"extract.weights: cannot read checkpoint {path} ({type(err).__name__}: {str(err) or 'empty file'}); "
            f"expected a state dict saved with torch.save(model.state_dict(), path) or a .safetensors file"
        ) from err
    except PipelineError as err:
        raise MissingWeightsError(f"extract.weights: cannot read checkpoint {path}: {err}") from err
    return {k.removeprefix("module."): v for k, v in state.items()}


def _safe_torch_load(path: Path):
    """torch.load with `weights_only=True`. On bytes that are not a checkpoint (a text file named .pth) the
    unpickler fails with whatever its parse hit (IndexError, KeyError: 101, UnicodeDecodeError, ...): no
    code ran, so every such failure is "not a checkpoint", reported as ValueError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, *UNREADABLE_CHECKPOINT):
        raise
    except Exception as err:  # noqa: BLE001 (see above: the unpickler's parse errors have no common type)
        raise ValueError(f"not a torch checkpoint ({type(err).__name__}: {err})") from err


_EXPORT_HINT = ("Export its weights once, on a machine where you trust the file: python -c \"import torch; "
                "m = {load}('{path}'{extra}); torch.save(m.state_dict(), '{out}')\" (or save them with "
                "safetensors.torch.save_file) and set extract.weights to that file.")


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding `code/` (its Python source) or `constants.pkl`;
    seen from the file listing, without unpickling anything."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in f"/{n}" or n.endswith("constants.pkl") for n in z.namelist())


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], *, path: Path, arch: str,
                  ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Load `state` into `model`, every model tensor required with its shape; return the ignored keys.

    Keys under `ignore_prefixes` (a classifier, a text tower) are dropped. Any model tensor the
    checkpoint lacks, or gives with another shape, stops the run (exit 4) with the file, the
    architecture and the keys; checkpoint keys the model does not have are reported with them, and
    ignored with a warning when nothing is missing.
    """
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    ignored = sorted(k for k in state if k not in kept or k not in own)
    missing = sorted(k for k in own if k not in kept)
    wrong = [f"{k} {tuple(kept[k].shape)} (model: {tuple(own[k].shape)})" for k in own
             if k in kept and kept[k].shape != own[k].shape]
    if missing or wrong:
        unexpected = sorted(k for k in kept if k not in own)
        raise MissingWeightsError(
            f"checkpoint {path} does not match the architecture {arch}:"
            + (f"\n  missing from the checkpoint: {_short(missing)}" if missing else "")
            + (f"\n  wrong shapes: {_short(wrong, 4)}" if wrong else "")
            + (f"\n  in the checkpoint but not in {arch}: {_short(unexpected)}" if unexpected else "")
            + "\nCheck extract.backbone names the model the checkpoint was trained as.")
    model.load_state_dict({k: kept[k] for k in own})
    if ignored:
        log.warning("checkpoint %s: ignored %d keys not in %s: %s", path.name, len(ignored), arch, _short(ignored, 10))
    return ignored


def hub_cached_file(repo_id: str, filenames: tuple[str, ...], what: str) -> Path:
    """A file of `repo_id` already in the local Hugging Face cache; never a download.

    Raises MissingWeightsError naming the repository, the files looked for and two ways to supply them.
    """
    from huggingface_hub import try_to_load_from_cache

    repo_id = repo_id.rstrip("/")
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    from huggingface_hub.constants import HF_HUB_CACHE

    raise MissingWeightsError(
        f"extract.weights=pretrained: {what} needs {' or '.join(filenames)} of the Hugging Face repository "
        f"{repo_id} in the local cache {HF_HUB_CACHE}, and it is not there (nothing is downloaded at run time).\n"
        f"On a machine with internet: huggingface-cli download {repo_id} {filenames[0]} and copy the cache "
        f"folder (or set HF_HOME), or download the file anywhere and set extract.weights=/path/to/{filenames[0]}")


def weights_record(path: Path, kind: str, label: str) -> tuple[str, str, str]:
    """(weights description, file name, sha256) for the provenance."""
    return f"{kind}:{label}", path.name, sha256_file(path)
