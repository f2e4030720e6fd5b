"""Backbone plug-ins (`timm:<model>`, `open_clip:<arch>`) with tiny models built here, saved to
temporary checkpoints and loaded back: nothing is downloaded (HF_HUB_OFFLINE is set, and the only
weights are the files these tests write)."""
from __future__ import annotations

import hashlib
import json
import sys

import h5py
import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
open_clip = pytest.importorskip("open_clip")

from cache.reader import load_cache  # noqa: E402
from cache.store import list_shards  # noqa: E402
from pipeline.config import ExtractConfig, load_config  # noqa: E402
from pipeline.errors import ConfigError, MissingWeightsError  # noqa: E402
from pipeline.features import build_extractor  # noqa: E402
from tests.conftest import EXTRACTED, copy_dataset  # noqa: E402

TIMM_MODEL = "test_vit"  # timm's own test model: 0.3 M parameters, 160 px input, 64-d pre-logits
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 48, "head_width": 24, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """A timm test_vit (with its 1000-way head) as .safetensors, and a tiny CLIP registered as
    `TinyCLIP-test` saved whole (image and text towers) as .pth."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(123)
    vit = timm.create_model(TIMM_MODEL, pretrained=False)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, folder / "vit.safetensors")
    (folder / "TinyCLIP-test.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / "TinyCLIP-test.json")
    torch.manual_seed(321)
    clip = open_clip.create_model("TinyCLIP-test", pretrained=None)
    torch.save({"state_dict": clip.state_dict(), "epoch": 1}, folder / "clip.pth")
    return {"timm": folder / "vit.safetensors", "clip": folder / "clip.pth", "folder": folder}


def crops(size: int, n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def extractor(backbone: str, weights, **kw):
    kw.setdefault("motion", "none")  # the plugin's own width is what these tests check, not the section's flow
    return build_extractor(ExtractConfig(backbone=backbone, weights=str(weights), device="cpu", threads=1, **kw))


# --------------------------------------------------------------------------- features and provenance


def test_timm_checkpoint_reloads_bit_identical_and_carries_its_provenance(checkpoints):
    a = extractor(f"timm:{TIMM_MODEL}", checkpoints["timm"])
    b = extractor(f"timm:{TIMM_MODEL}", checkpoints["timm"])
    x = crops(160)
    fa, fb = a(x), b(x)
    assert fa.shape == (6, 64) and fa.dtype == np.float32 and np.isfinite(fa).all()
    assert fa.tobytes() == fb.tobytes()  # same file, same CPU: the same bits
    other = extractor(f"timm:{TIMM_MODEL}", "random")  # seed 0, not the checkpoint's 123
    assert not np.allclose(other(x), fa, atol=1e-3)  # the weights were loaded, not left at init
    p = a.provenance()
    assert p["model"] == "test_vit.r160_in1k" and p["library"] == "timm" and p["library_version"] == timm.__version__
    assert p["weights_file"] == "vit.safetensors" and p["weights_sha256"] == sha256(checkpoints["timm"])
    assert p["feature_dim"] == 64 and p["feature_output"] == "pre_logits"
    assert p["preprocess"] == {"crop_size": 160, "margin": 0.0, "input_size": 160, "mean": [0.5] * 3,
                               "std": [0.5] * 3, "interpolation": "bicubic"}  # test_vit's pretrained_cfg
    assert p["ignored_checkpoint_keys"] == 2  # head.weight, head.bias: the classifier is not used


def test_timm_features_equal_timm_pre_logits(checkpoints):
    """What the plug-in computes is timm's own pre-logits of the normalised crop."""
    from safetensors.torch import load_file

    ex = extractor(f"timm:{TIMM_MODEL}", checkpoints["timm"])
    ref = timm.create_model(TIMM_MODEL, pretrained=False).eval()
    ref.load_state_dict(load_file(str(checkpoints["timm"])))
    x = crops(160, 2)
    t = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(t), pre_logits=True).numpy()
    np.testing.assert_allclose(ex(x), want, rtol=1e-4, atol=1e-5)


def test_crop_size_apart_from_the_input_is_resized(checkpoints):
    ex = extractor(f"timm:{TIMM_MODEL}", checkpoints["timm"], crop_size=64, margin=0.1)
    assert ex(crops(64)).shape == (6, 64)
    assert ex.preprocess()["crop_size"] == 64 and ex.preprocess()["input_size"] == 160 and ex.margin == 0.1


def test_clip_whole_model_checkpoint_embedding_and_pooled(checkpoints):
    a = extractor("open_clip:TinyCLIP-test", checkpoints["clip"])
    b = extractor("open_clip:TinyCLIP-test", checkpoints["clip"])
    x = crops(64)
    assert a(x).shape == (6, 32) and a(x).tobytes() == b(x).tobytes()
    p = a.provenance()
    assert p["library"] == "open_clip" and p["weights_file"] == "clip.pth" and p["feature_output"] == "embedding"
    assert p["weights_sha256"] == sha256(checkpoints["clip"]) and p["ignored_checkpoint_keys"] == 0  # text tower set aside
    assert p["preprocess"]["crop_size"] == 64 and p["preprocess"]["margin"] == 0.25  # CLIP's looser default crop
    assert p["preprocess"]["mean"] == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))
    pooled = extractor("open_clip:TinyCLIP-test", checkpoints["clip"], clip_features="pooled")
    assert pooled(x).shape == (6, 48)  # the tower's width, before the 48 -> 32 projection
    # embedding = pooled @ proj: the same tower, so the projection of one is the other
    sd = torch.load(checkpoints["clip"], weights_only=True)["state_dict"]
    np.testing.assert_allclose(pooled(x) @ sd["visual.proj"].numpy(), a(x), rtol=1e-4, atol=1e-5)


def test_default_margins_match_the_plugins():
    from pipeline.backbones import builtin_margin
    from pipeline.backbones import clip_plugin, timm_plugin

    assert builtin_margin("timm:anything") == timm_plugin.MARGIN
    assert builtin_margin("open_clip:ViT-B-16") == clip_plugin.MARGIN > builtin_margin("resnet18")


# --------------------------------------------------------------------------- the stage and the head


@pytest.fixture(scope="module")
def plugin_cache(face_dataset, checkpoints, tmp_path_factory):
    """`extract` run for real on the fixture videos with the timm checkpoint."""
    from pipeline.registry import stage

    out = tmp_path_factory.mktemp("plugin_cache")
    copy_dataset(face_dataset["dir"], out, without=EXTRACTED)
    cfg = load_config(face_dataset["params"], data_root=str(out),
                      overrides=[f"extract.backbone=timm:{TIMM_MODEL}", f"extract.weights={checkpoints['timm']}",
                                 "extract.threads=1",  # one thread: the shared CI cores run ViTs 5x slower on two
                                 "extract.motion=none"])  # the plugin's own width, 64, is what is checked
    summary = stage("extract").run(cfg, dataset="faces")
    return cfg, summary, out / "faces" / "features"


@pytest.mark.slow  # decodes the five fixture videos (~10 s on two shared cores)
def test_extract_writes_plugin_width_and_provenance(plugin_cache, checkpoints):
    from pipeline.commands.verify import info, verify

    cfg, summary, feats = plugin_cache
    assert summary["cached"] == 5 and summary["feature_dim"] == 64
    with h5py.File(list_shards(feats)[0], "r") as f:
        assert f["features"].shape[1:] == (105, 64)
        assert f.attrs["model"] == "test_vit.r160_in1k" and f.attrs["library"] == "timm"
        assert f.attrs["weights_sha256"] == sha256(checkpoints["timm"])
        pre = json.loads(f.attrs["preprocess"])
        assert pre["crop_size"] == 160 and pre["interpolation"] == "bicubic"
    shown = info(cfg, "faces")["provenance"]
    assert shown["weights_file"] == "vit.safetensors" and shown["library_version"] == timm.__version__
    assert shown["preprocess"]["mean"] == [0.5] * 3 and shown["feature_dim"] == 64
    problems, _ = verify(cfg, "faces")
    assert problems == []


@pytest.mark.slow
def test_head_trains_on_plugin_features(plugin_cache):
    """The CEFLNet head builds itself for the cache's width (64 here) and learns for two epochs."""
    import dataclasses

    from pipeline.head.train import Fold, cross_validate

    cfg, _, feats = plugin_cache
    cache = load_cache(feats)
    th = dataclasses.replace(cfg.train_head, epochs=2, hidden=16, batch_size=2, warmup_epochs=1, device="cpu")
    rows = np.arange(len(cache))
    [res] = cross_validate(th, cache.features, cache.label, [Fold(0, rows, rows)], len(cache.class_names),
                           device=torch.device("cpu"))
    assert len(res.history) == 2 and res.probs.shape == (5, len(cache.class_names))
    assert np.isfinite(res.probs).all()
    first = [v for k, v in res.state_dict.items() if v.ndim == 2 and not k.startswith("input.")][0]
    assert first.shape[-1] == 64  # the first projection reads 64-d frames


# --------------------------------------------------------------------------- bad input stops early


@pytest.mark.slow
def test_missing_checkpoint_exits_4_before_any_video_is_decoded(face_dataset, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import stages.extract
    from pipeline.cli import main

    def no_decoding(*a, **k):
        raise AssertionError("a video was decoded")

    monkeypatch.setattr(stages.extract, "read_frames", no_decoding)
    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    missing = tmp_path / "nowhere" / "model.safetensors"
    res = CliRunner().invoke(main, ["run", "extract", "--no-deps", "--params", str(face_dataset["params"]),
                                    "--data-root", str(tmp_path), "--dataset", "faces",
                                    "--set", f"extract.backbone=timm:{TIMM_MODEL}", "--set", f"extract.weights={missing}"])
    assert res.exit_code == 4, res.output
    assert str(missing) in res.output and f"timm:{TIMM_MODEL}" in res.output
    assert not (tmp_path / "faces" / "features").exists()


def test_mismatched_checkpoint_names_file_architecture_and_keys(checkpoints):
    with pytest.raises(MissingWeightsError) as err:  # test_vit weights into a CLIP tower
        extractor("open_clip:TinyCLIP-test", checkpoints["timm"])
    msg = str(err.value)
    assert "vit.safetensors" in msg and "open_clip:TinyCLIP-test" in msg
    assert "conv1.weight" in msg and "blocks.0.attn.qkv.weight" in msg  # missing, and not in the tower
    assert err.value.exit_code == 4


def test_wrong_shape_is_refused(checkpoints, tmp_path):
    sd = torch.load(checkpoints["clip"], weights_only=True)["state_dict"]
    sd["visual.proj"] = torch.zeros(48, 16)
    bad = tmp_path / "bad_proj.pth"
    torch.save(sd, bad)
    with pytest.raises(MissingWeightsError, match=r"bad_proj\.pth[\s\S]*wrong shapes: proj \(48, 16\) \(model: \(48, 32\)\)"):
        extractor("open_clip:TinyCLIP-test", bad)


def test_unknown_timm_name_lists_close_matches():
    with pytest.raises(ConfigError) as err:
        extractor("timm:convnext_tinyy", "random")
    assert "convnext_tiny" in str(err.value) and err.value.exit_code == 2


def test_pretrained_not_in_local_cache_says_where(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo_id, filename, **kw: None)
    with pytest.raises(MissingWeightsError, match=r"timm/test_vit\.r160_in1k[\s\S]*model\.safetensors"):
        extractor(f"timm:{TIMM_MODEL}", "pretrained")


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now raises ImportError
    with pytest.raises(MissingWeightsError, match=r'pip install -e "\.\[clip\]"'):
        extractor("open_clip:ViT-B-16", "random")


def test_config_rejects_imagenet_weights_and_empty_names(tmp_path):
    problems = ExtractConfig(backbone="timm:vit_base_patch16_224").check("extract")  # weights default: imagenet
    assert any("extract.weights" in p and "pretrained" in p for p in problems)
    assert any("extract.backbone" in p for p in ExtractConfig(backbone="timm:", weights="random").check("extract"))
    assert ExtractConfig(backbone="open_clip:ViT-B-16", weights="random").check("extract") == []


def test_pickled_model_and_garbage_files_are_refused_without_running_them(tmp_path):
    whole = tmp_path / "whole_model.pt"
    torch.save(timm.create_model(TIMM_MODEL, pretrained=False), whole)  # an object, not a state dict
    with pytest.raises(MissingWeightsError, match=r"whole_model\.pt is not a plain state dict[\s\S]*state_dict\(\)"):
        extractor(f"timm:{TIMM_MODEL}", whole)
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match=r"cannot read checkpoint .*model\.safetensors"):
        extractor(f"timm:{TIMM_MODEL}", garbage)
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(MissingWeightsError, match="is not a checkpoint file"):
        extractor(f"timm:{TIMM_MODEL}", text)


class _TouchOnLoad:
    """Unpickling this creates `marker`: what a malicious pickled "model" would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _torchscript_writing(marker, path) -> None:
    """A TorchScript archive whose `__setstate__` writes `marker` when the archive is loaded."""

    class Writer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.marker = str(marker)

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
            return self.w, self.marker, self.training

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
            self.w = state[0]
            self.marker = state[1]
            self.training = state[2]
            torch.save(torch.zeros(1), self.marker)

    torch.jit.script(Writer()).save(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [f"timm:{TIMM_MODEL}", "resnet18"])
@pytest.mark.parametrize("kind", ["torchscript", "pickle"])
def test_weights_file_that_carries_code_is_refused_and_nothing_runs(face_dataset, tmp_path, monkeypatch, kind, backbone):
    """Issue 29: a crafted `extract.weights` file, fed through the real CLI, runs nothing (no marker)
    and is refused (exit 4) with the one-line export to a state dict."""
    from click.testing import CliRunner

    import stages.extract
    from pipeline.cli import main

    monkeypatch.setattr(stages.extract, "read_frames", lambda *a, **k: pytest.fail("a video was decoded"))
    copy_dataset(face_dataset["dir"], tmp_path, without=EXTRACTED)
    marker = tmp_path / "marker"
    weights = tmp_path / "model.pt"
    if kind == "torchscript":
        _torchscript_writing(marker, weights)
    else:
        torch.save({"state_dict": _TouchOnLoad(marker)}, weights)
    assert not marker.exists()
    res = CliRunner().invoke(main, ["run", "extract", "--no-deps", "--params", str(face_dataset["params"]),
                                    "--data-root", str(tmp_path), "--dataset", "faces",
                                    "--set", f"extract.backbone={backbone}", "--set", f"extract.weights={weights}"])
    assert not marker.exists(), "code in the weights file ran"
    assert res.exit_code == 4, res.output
    assert str(weights) in res.output and "torch.save(m.state_dict()" in res.output
    assert ("TorchScript" if kind == "torchscript" else "pickled") in res.output
