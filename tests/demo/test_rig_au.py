"""The action-unit rig: the mesh lands on the landmarks, the warp is the identity at rest, never folds,
moves what each AU documents, and is deterministic."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.demo.generate import CLASSES, load_models
from scipy.spatial import Delaunay

from pipeline.demo.rig_au import (ACTION_UNITS, AU_PROTOTYPES, INTENSITY, MOUTH_HOLE, N_BASE, SKIN_INDEX, TEMPLATE,
                                  Activation, au_expression_layers, au_layers, face_mesh, fit_mesh, mesh_displacement,
                                  piecewise_affine_field, unfold)

EXTREME = INTENSITY[1] * 1.075  # the strongest side of the strongest draw


@pytest.fixture(scope="module")
def photos():
    """Every shipped photo (RetinaFace landmarks, the same as the generator's)."""
    return [face for person in load_models() for face in person]


def _act(aus: tuple[int, ...], level: float = 1.0) -> Activation:
    return Activation(aus, np.full(len(aus), level), np.full(len(aus), level))


def _moved(face, act: Activation) -> tuple[np.ndarray, np.ndarray]:
    """(neutral, moved) mesh points in face-frame units (x towards the image-right eye, y down)."""
    mesh = face_mesh(face.frame, face.image.shape[:2])
    moved = mesh.points + unfold(mesh, mesh_displacement(mesh, act))
    f = face.frame
    to_frame = lambda p: np.stack([(p - f.origin) @ f.u, (p - f.origin) @ f.v], 1) / f.d  # noqa: E731
    return to_frame(mesh.points), to_frame(moved)


def test_template_is_symmetric_and_moves_are_written_for_one_half():
    mirror = np.array([*range(16, -1, -1)])
    assert np.allclose(TEMPLATE[:17, 0], -TEMPLATE[mirror, 0]) and np.allclose(TEMPLATE[:17, 1], TEMPLATE[mirror, 1])
    for au in {a for variants in AU_PROTOTYPES.values() for v in variants for a in v}:
        assert au in ACTION_UNITS, au
        for key in ACTION_UNITS[au].moves:
            i = SKIN_INDEX[key] if isinstance(key, str) else key
            assert i < N_BASE and TEMPLATE[i, 0] >= -1e-9, (au, key)  # image-right half or midline


def test_mesh_lands_on_the_five_landmarks(photos):
    for face in photos:
        mesh = fit_mesh(face.frame, face.image.shape[:2])
        p = mesh.points
        eyes = np.array([p[36:42].mean(0), p[42:48].mean(0)])
        got = np.vstack([eyes, p[[30, 48, 54]]])
        assert np.abs(got - face.frame.landmarks).max() < 1.0, face.identity
        # and the rest of the face is where a face is: brows above the eyes, chin below the mouth
        _, frame_pts = _moved(face, _act(()))
        assert (frame_pts[17:27, 1] < -0.1).all() and (frame_pts[8, 1] > frame_pts[57, 1] + 0.3), face.identity
        assert frame_pts[0, 0] < -0.9 and frame_pts[16, 0] > 0.9, face.identity  # jaw wider than the eyes


def test_no_action_unit_is_the_identity(photos):
    face = photos[0]
    field, shade = au_layers(face_mesh(face.frame, face.image.shape[:2]), _act(()), face.image)
    assert np.abs(field).max() < 1e-3
    assert not shade.any()


def _jacobian_det(field: np.ndarray, a: float) -> np.ndarray:
    """det of d(x + a f(x))/dx, the backward map's local area scale."""
    fx, fy = a * field[..., 0], a * field[..., 1]
    dfx_dy, dfx_dx = np.gradient(fx)
    dfy_dy, dfy_dx = np.gradient(fy)
    return (1 + dfx_dx) * (1 + dfy_dy) - dfx_dy * dfy_dx


def _check_never_folds(faces: list, label: str) -> None:
    for face in faces:
        mesh = face_mesh(face.frame, face.image.shape[:2])
        for variant in AU_PROTOTYPES[label]:
            act = _act(variant, EXTREME)
            moved = mesh.points + unfold(mesh, mesh_displacement(mesh, act))
            field, shade = au_layers(mesh, act, face.image)
            assert np.isfinite(field).all() and np.isfinite(shade).all()
            # inside the face (jaw and brows' hull), away from the opened mouth (a tear by design)
            face_mask = np.zeros(mesh.shape, np.uint8)
            cv2.fillConvexPoly(face_mask, cv2.convexHull(np.round(moved[:27]).astype(np.int32)), 1)
            hole = np.zeros(mesh.shape, np.uint8)
            cv2.fillPoly(hole, [np.round(moved[list(MOUTH_HOLE)]).astype(np.int32)], 1)
            inside = (face_mask > 0) & (cv2.dilate(hole, np.ones((7, 7), np.uint8)) == 0)
            for a in (0.5, 1.0):  # the renderer scales the apex field by the frame's intensity
                det = _jacobian_det(field, a)[inside]
                assert det.min() > 0, (face.identity, variant, a, float(det.min()))


@pytest.mark.parametrize("label", CLASSES)
def test_field_is_finite_and_never_folds(photos, label):
    _check_never_folds(photos[::8], label)


@pytest.mark.slow
@pytest.mark.parametrize("label", CLASSES)
def test_field_never_folds_on_any_shipped_photo(photos, label):
    _check_never_folds(photos, label)


def test_unfold_barely_changes_the_documented_moves(photos):
    """The AU amplitudes fit every shipped face: `unfold` corrects at most a few hundredths of IOD."""
    for face in photos:
        mesh = face_mesh(face.frame, face.image.shape[:2])
        for variants in AU_PROTOTYPES.values():
            for variant in variants:
                disp = mesh_displacement(mesh, _act(variant, EXTREME))
                change = np.hypot(*(unfold(mesh, disp) - disp).T).max() / mesh.d
                assert change < 0.08, (face.identity, variant, change)


def _lip_gap(pts: np.ndarray) -> float:
    return float(np.mean(pts[[65, 66, 67], 1] - pts[[63, 62, 61], 1]))


def test_action_units_move_the_documented_way(photos):
    face = photos[1]
    rest, m = _moved(face, _act((12,)))
    assert (m[[48, 54], 1] < rest[[48, 54], 1] - 0.08).all()  # AU12: corners up ...
    assert m[54, 0] > rest[54, 0] + 0.08 and m[48, 0] < rest[48, 0] - 0.08  # ... and out
    rest, m = _moved(face, _act((15,)))
    assert (m[[48, 54], 1] > rest[[48, 54], 1] + 0.05).all()  # AU15: corners down
    rest, m = _moved(face, _act((26,)))
    assert _lip_gap(m) > _lip_gap(rest) + 0.15 and m[8, 1] > rest[8, 1] + 0.15  # AU26: mouth opens, chin drops
    rest, m = _moved(face, _act((1,)))
    assert (m[[21, 22], 1] < rest[[21, 22], 1] - 0.1).all()  # AU1: inner brows up
    rest, m = _moved(face, _act((4,)))
    assert (m[[21, 22], 1] > rest[[21, 22], 1] + 0.08).all()  # AU4: brows down ...
    assert m[22, 0] - m[21, 0] < rest[22, 0] - rest[21, 0] - 0.1  # ... and together
    rest, m = _moved(face, _act((10,)))
    assert m[51, 1] < rest[51, 1] - 0.05  # AU10: upper lip up
    rest, m = _moved(face, _act((5,)))
    assert (m[[37, 38, 43, 44], 1] < rest[[37, 38, 43, 44], 1] - 0.03).all()  # AU5: upper lids up


@pytest.mark.parametrize("label", CLASSES)
def test_every_variant_of_a_class_moves_its_signature(photos, label):
    face = photos[0]
    for variant in AU_PROTOTYPES[label]:
        rest, m = _moved(face, _act(variant))
        corners, brows = m[[48, 54], 1] - rest[[48, 54], 1], m[[21, 22], 1] - rest[[21, 22], 1]
        if label == "happiness":
            assert (corners < -0.08).all(), variant
        elif label == "sadness":
            assert (corners > 0.04).all() and (brows < 0).all(), variant
        elif label == "surprise":
            assert (brows < -0.1).all() and _lip_gap(m) > 0.15, variant
        elif label == "fear":
            assert (brows < 0).all() and m[22, 0] - m[21, 0] < rest[22, 0] - rest[21, 0], variant
            assert _lip_gap(m) > 0.05, variant
        elif label == "anger":
            assert (brows > 0.08).all(), variant
        elif label == "disgust":
            assert m[51, 1] < rest[51, 1] - 0.03 or (corners > 0.04).all(), variant


def test_lips_never_pass_each_other(photos):
    """AU17 pushes the lower lip up, AU24 presses the lips: the contact line stays closed, not crossed."""
    for variant in ((17, 24), (17, 23), (9, 15, 17)):
        rest, m = _moved(photos[0], _act(variant, EXTREME))
        assert (m[[67, 66, 65], 1] >= m[[61, 62, 63], 1] - 1e-9).all(), variant


def test_same_rng_same_layers_other_rng_other_layers(photos):
    face = photos[2]
    a = au_expression_layers(face, "fear", np.random.default_rng(7), 1.1)
    b = au_expression_layers(face, "fear", np.random.default_rng(7), 1.1)
    c = au_expression_layers(face, "fear", np.random.default_rng(8), 1.1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_unknown_class_is_a_clear_error(photos):
    with pytest.raises(ValueError, match="unknown expression 'contempt'"):
        au_expression_layers(photos[0], "contempt", np.random.default_rng(0))


def test_piecewise_affine_field_reproduces_an_affine_move():
    """A rigid shift of every point is a constant field (the interpolation is exact for affine moves)."""
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.uniform(5, 60, (30, 2)), [[-10, -10], [-10, 80], [80, -10], [80, 80]]])
    field = piecewise_affine_field(pts, pts + [3.0, -2.0], Delaunay(pts).simplices, (64, 64))
    assert np.allclose(field, [-3.0, 2.0], atol=1e-4)


def test_contact_sheet_renders_a_rig(photos):
    """`contact_sheet.apex_image` takes a rig's layers (the sheet `python -m pipeline.demo.rig_au` draws)."""
    from pipeline.demo.contact_sheet import apex_image

    face = photos[0]
    layers = lambda f, label: au_expression_layers(f, label, np.random.default_rng(0))  # noqa: E731
    neutral, smile = apex_image(face, None, 96), apex_image(face, "happiness", 96, layers)
    assert smile.shape == (96, 96, 3) and smile.dtype == np.uint8
    assert (np.abs(smile.astype(int) - neutral).max(2) > 10).sum() > 30  # the mouth and cheeks moved
