"""Convert MediaPipe's face_landmark.tflite to pipeline/assets/facemesh/face_landmark.npz, and check the port.

    python bench/facemesh_port.py --convert mediapipe-0.10.14-cp311-...whl   # writes the npz (numpy + flatbuffers)
    python bench/facemesh_port.py --check --ref-python /tmp/mpv/bin/python     # port vs the tflite interpreter
    python bench/facemesh_port.py --calibrate --ref-python /tmp/mpv/bin/python # MARGIN vs MediaPipe's own FaceMesh
    python bench/facemesh_port.py --fixture --ref-python /tmp/mpv/bin/python   # tests/data/facemesh_ref.npz

The reference (the tflite interpreter, `ai-edge-litert`, and `mp.solutions.face_mesh.FaceMesh`) runs in a
separate Python given by --ref-python (a venv with mediapipe 0.10.14 and ai-edge-litert; neither is a
dependency of the package): this script calls itself there with --_reference on an npz of inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TFLITE_MEMBER = "mediapipe/modules/face_landmark/face_landmark.tflite"
SCHEMA_MEMBER = "mediapipe/tasks/metadata/schema_py_generated.py"
OUT = ROOT / "pipeline" / "assets" / "facemesh" / "face_landmark.npz"
VIDEOS = [ROOT / "tests/data/videos/single_face.mp4", ROOT / "tests/data/videos/video_01.mp4",
          ROOT.parent / "shared/testdata/videos/WolfgangLanger_Pexels.mp4"]
PHOTOS = sorted((ROOT / "pipeline/assets/faces").glob("*.jpg"))
SOURCES = [v for v in VIDEOS if v.exists()] + PHOTOS
GRID = (0.0, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2)


WHEEL_SHA256 = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
"""mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl: the one wheel whose schema module
`convert` executes (the assets README's provenance)."""


def convert(wheel: Path, out: Path = OUT) -> None:
    """Every DEQUANTIZE'd float16 tensor of the tflite, transposed to torch layout, kept float16 (exact)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:  # the tflite schema below is Python from the wheel: run only the recorded one
        sys.exit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256} (mediapipe 0.10.14, cp311 manylinux)")
    with zipfile.ZipFile(wheel) as zf:
        buf = zf.read(TFLITE_MEMBER)
        schema = types.ModuleType("tflite_schema")
        exec(compile(zf.read(SCHEMA_MEMBER), SCHEMA_MEMBER, "exec"), schema.__dict__)
    model = schema.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    arrays = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        name = t.Name().decode()
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if t.Type() != schema.TensorType.FLOAT16 or isinstance(data, int):
            continue
        a = data.view(np.float16).reshape(t.ShapeAsNumpy())
        layer, kind = name.split("/")
        if kind == "Kernel":
            # conv: (O, kh, kw, I) → (O, I, kh, kw); depthwise: (1, kh, kw, C) → (C, 1, kh, kw)
            a = a.transpose(3, 0, 1, 2) if layer.startswith("depthwise") else a.transpose(0, 3, 1, 2)
        elif kind == "Alpha":
            a = a.reshape(-1)
        arrays[f"{layer}.{'bias' if kind == 'Bias' else 'weight'}"] = np.ascontiguousarray(a)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"{out}: {len(arrays)} arrays, {sum(a.size for a in arrays.values())} weights, {out.stat().st_size} bytes")
    print(f"wheel sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}")
    print(f"tflite sha256 {hashlib.sha256(buf).hexdigest()}")


# ---------------------------------------------------------------- reference side (runs under --ref-python)

def reference(inp: Path, out: Path) -> None:
    """Interpreter outputs for `crops` ([0, 1] input) and FaceMesh landmarks (frame pixels) for `frames`."""
    import mediapipe as mp
    from ai_edge_litert.interpreter import Interpreter

    data = dict(np.load(inp, allow_pickle=False))
    res = {}
    if "crops" in data:
        tfl = Path(mp.__file__).parent / "modules/face_landmark/face_landmark.tflite"
        it = Interpreter(model_path=str(tfl))
        it.allocate_tensors()
        (inp_d,), outs = it.get_input_details(), it.get_output_details()
        lms, scores = [], []
        for c in data["crops"]:
            it.set_tensor(inp_d["index"], (c[None].astype(np.float32) / 255.0))
            it.invoke()
            o = {d["name"]: it.get_tensor(d["index"]) for d in outs}
            lms.append(o["conv2d_21"].reshape(468, 3))
            scores.append(1 / (1 + np.exp(-o["conv2d_31"].reshape(()))))
        res["landmarks"], res["scores"] = np.stack(lms), np.array(scores)
    if "frames" in data:
        frames, video = data["frames"], data["video_ids"]
        found, pts = np.zeros(len(frames), bool), np.zeros((len(frames), 468, 2), np.float32)
        mesh, last = None, None
        for i, f in enumerate(frames):
            if video[i] != last:  # a fresh tracker per video, tracking mode within it (the usual video use)
                mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                                       refine_landmarks=False, min_detection_confidence=0.5)
                last = video[i]
            r = mesh.process(f)
            if r.multi_face_landmarks:
                lm = r.multi_face_landmarks[0].landmark
                h, w = f.shape[:2]
                pts[i] = [(p.x * w, p.y * h) for p in lm]
                found[i] = True
        res["frame_landmarks"], res["found"] = pts, found
    np.savez(out, **res)


def run_reference(ref_python: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        i, o = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(i, **inputs)
        subprocess.run([ref_python, __file__, "--_reference", str(i), str(o)], check=True)
        return dict(np.load(o))


# ---------------------------------------------------------------- our side

def faces(max_per_video: int = 40, step: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB frames (a list: sizes differ by source), RetinaFace's 5 points of the largest face, source ids."""
    import cv2

    from pipeline.detector import RetinaFaceDetector

    det = RetinaFaceDetector(device="cpu", runtime="onnxruntime")
    frames, lm5, ids = [], [], []
    sources = [(p, cv2.imread(str(p)) if p.suffix == ".jpg" else None) for p in SOURCES]
    for sid, (path, img) in enumerate(sources):
        if img is None:
            cap = cv2.VideoCapture(str(path))
            imgs, k = [], 0
            while len(imgs) < max_per_video:
                ok, f = cap.read()
                if not ok:
                    break
                if k % step == 0:
                    imgs.append(f[..., ::-1].copy())
                k += 1
        else:
            imgs = [img[..., ::-1].copy()]
        for f in imgs:
            d = det.detect([f])[0]
            if len(d):
                big = np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1]))
                frames.append(f), lm5.append(d.landmarks[big]), ids.append(sid)
    return frames, np.array(lm5), np.array(ids)


def _run(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The port's landmarks and face scores for uint8 crops."""
    import torch

    from pipeline.facemesh import load_net

    with torch.inference_mode():
        lm, score = load_net()(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)
    return lm.numpy(), score.numpy()


def check(ref_python: str, n: int = 20) -> None:
    """Port vs interpreter on `n` real aligned crops, spread over every source."""
    from pipeline.facemesh import mesh_crop, mesh_landmarks

    frames, lm5, ids = faces()
    pick = np.linspace(0, len(frames) - 1, n).round().astype(int)
    crops = np.stack([mesh_crop(frames[i], lm5[i]) for i in pick])
    ref = run_reference(ref_python, crops=crops)
    ours = mesh_landmarks(crops)
    score = _run(crops)[1]
    d = np.abs(ours - ref["landmarks"])
    print(f"\n{n} crops from {len(set(ids[pick]))} sources (RetinaFace 5 points, margin from pipeline.facemesh)\n")
    print("| output | max abs diff | mean abs diff |\n|---|---|---|")
    print(f"| x, y (px) | {d[..., :2].max():.2e} | {d[..., :2].mean():.2e} |")
    print(f"| z (px) | {d[..., 2].max():.2e} | {d[..., 2].mean():.2e} |")
    print(f"| face score | {np.abs(score - ref['scores']).max():.2e} | {np.abs(score - ref['scores']).mean():.2e} |")


def calibrate(ref_python: str) -> None:
    """Mean distance (crop px) between the port's points and FaceMesh's, mapped by the same similarity, per margin."""
    import cv2

    from pipeline.align import similarity, template
    from pipeline.facemesh import CROP

    frames, lm5, ids = faces()
    # FaceMesh needs whole frames; pad to one size per call by running per source
    ref_pts, found = [], []
    for sid in np.unique(ids):
        idx = np.flatnonzero(ids == sid)
        r = run_reference(ref_python, frames=np.stack([frames[i] for i in idx]), video_ids=ids[idx])
        ref_pts.append(r["frame_landmarks"]), found.append(r["found"])
    ref_pts, found = np.concatenate(ref_pts), np.concatenate(found)
    # the same face in both (group photos): FaceMesh's nose tip near RetinaFace's nose
    iod5 = np.linalg.norm(lm5[:, 0] - lm5[:, 1], axis=-1)
    same = np.linalg.norm(ref_pts[:, 1] - lm5[:, 2], axis=-1) < 0.3 * iod5
    keep = np.flatnonzero(found & same)
    print(f"\n{len(keep)} faces ({len(np.unique(ids[keep]))} sources) where RetinaFace and FaceMesh found the same face\n")
    print("| margin | mean error (crop px) | median | mean error / inter-ocular | face score < 0.5 | crop side / MediaPipe ROI side (median) |\n|---|---|---|---|---|---|")
    for m in GRID:
        crops, mapped, ratio = [], [], []
        for i in keep:
            mat = similarity(lm5[i], template(CROP, m))
            # MediaPipe's ROI from landmarks: the points' box, square on its long side, x1.5
            box = ref_pts[i].max(0) - ref_pts[i].min(0)
            ratio.append(CROP / np.sqrt(abs(np.linalg.det(mat[:, :2]))) / (1.5 * box.max()))
            crops.append(cv2.warpAffine(frames[i], mat, (CROP, CROP), borderValue=0.0))
            mapped.append(ref_pts[i] @ mat[:, :2].T + mat[:, 2])
        pts, score = _run(np.stack(crops))
        mapped = np.stack(mapped)
        err = np.linalg.norm(pts[..., :2] - mapped, axis=-1).mean(1)
        iod = np.linalg.norm(mapped[:, 33] - mapped[:, 263], axis=-1)
        print(f"| {m:.2f} | {err.mean():.2f} | {np.median(err):.2f} | {(err / iod).mean():.4f} | {(score < 0.5).sum()} | {np.median(ratio):.3f} |")


def fixture(ref_python: str) -> None:
    """tests/data/facemesh_ref.npz: 3 crops (mesh_crop of real faces) and the interpreter's outputs for them.

    First frames of the two repository test videos and the first shipped photo (all redistributable,
    tests/data/PROVENANCE.md, pipeline/assets/faces/README.md).
    """
    from pipeline.facemesh import mesh_crop

    frames, lm5, ids = faces(max_per_video=1)
    names = [ROOT / "tests/data/videos/single_face.mp4", ROOT / "tests/data/videos/video_01.mp4", PHOTOS[0]]
    pick = [int(np.flatnonzero(ids == SOURCES.index(n))[0]) for n in names]
    crops = np.stack([mesh_crop(frames[i], lm5[i]) for i in pick])
    ref = run_reference(ref_python, crops=crops)
    out = ROOT / "tests" / "data" / "facemesh_ref.npz"
    np.savez_compressed(out, crops=crops, landmarks=ref["landmarks"].astype(np.float32),
                        scores=ref["scores"].astype(np.float32))
    print(f"{out}: {out.stat().st_size} bytes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convert", type=Path, metavar="WHEEL")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--fixture", action="store_true")
    ap.add_argument("--ref-python", default="/tmp/mpv/bin/python")
    ap.add_argument("--_reference", nargs=2, type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._reference:
        return reference(*a._reference)
    if a.convert:
        convert(a.convert)
    if a.check:
        check(a.ref_python)
    if a.calibrate:
        calibrate(a.ref_python)
    if a.fixture:
        fixture(a.ref_python)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
