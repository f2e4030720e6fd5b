from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.head.data import fold_groups
from pipeline.head.train import inner_split, lr_at, make_folds
from pipeline.io import ManifestRow
from pipeline.config import TrainHeadConfig


def test_folds_never_share_a_subject_and_cover_every_video():
    rng = np.random.default_rng(0)
    subjects = [f"S{rng.integers(30)}" for _ in range(205)]
    labels = rng.integers(0, 6, 205)
    folds = make_folds(labels, subjects, k=10, seed=0)
    assert len(folds) == 10
    seen = np.concatenate([f.test for f in folds])
    assert sorted(seen.tolist()) == list(range(205))
    for f in folds:
        assert not {subjects[i] for i in f.train} & {subjects[i] for i in f.test}
        assert len(np.intersect1d(f.train, f.test)) == 0 and len(f.train) + len(f.test) == 205
    again = make_folds(labels, subjects, k=10, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))  # seeded


def test_a_group_stays_in_one_fold_while_its_people_stay_people():
    """Related people share a manifest `group` (the demo's blends and their parents): folds and the inner split
    of `epoch_select: inner` never split a group, while the subjects, whom subject_norm and identity handling
    normalise, stay the persons."""
    people = [f"P{i}" for i in range(18)]
    family = {p: f"F{i // 3}" for i, p in enumerate(people)}  # 6 families of 3
    subjects = [people[i % 18] for i in range(18 * 12)]
    labels = np.array([(i // 18) % 6 for i in range(18 * 12)])
    rows = [ManifestRow(video_id=f"v{i}", path="", label="", subject=s, group=family[s]) for i, s in enumerate(subjects)]
    groups = fold_groups(subjects, rows)
    folds = make_folds(labels, groups, k=6, seed=0)
    for f in folds:
        assert not {groups[i] for i in f.train} & {groups[i] for i in f.test}
        assert len({subjects[i] for i in f.test}) == 3  # one family: its three people
    inner = inner_split(labels, groups, folds[0].train, 5, 0)
    assert inner is not None and not {groups[i] for i in inner.train} & {groups[i] for i in inner.test}
    by_person = make_folds(labels, subjects, k=6, seed=0)  # what the group prevents: a family split across folds
    assert any({family[subjects[i]] for i in f.train} & {family[subjects[i]] for i in f.test} for f in by_person)
    # no group (or no manifest row): the subject is the key
    assert fold_groups(["a", "b", "c"], [None, rows[0], ManifestRow(video_id="x", path="", label="", subject="c")]
                       ).tolist() == ["a", "F0", "c"]


def test_official_folds_and_fixed_split_win():
    labels = np.array([0, 1, 0, 1, 0, 1])
    subj = list("abcdef")
    folds = make_folds(labels, subj, folds=[2, 2, 1, 1, 3, 3], k=10)
    assert [f.test.tolist() for f in folds] == [[2, 3], [0, 1], [4, 5]]
    split = make_folds(labels, subj, folds=[None] * 6, splits=["train", "train", "test", "train", "test", "train"], k=10)
    assert len(split) == 1 and split[0].test.tolist() == [2, 4] and split[0].train.tolist() == [0, 1, 3, 5]


def test_too_few_subjects_is_named():
    with pytest.raises(PipelineError, match="train_head.folds=10"):
        make_folds(np.zeros(6, int), list("aabbcc"), k=10)


def test_schedule_is_the_authors():
    cfg = TrainHeadConfig()
    assert lr_at(0, cfg) == pytest.approx(1e-5)  # first warm-up epoch: 1/10 of lr
    assert lr_at(9, cfg) == pytest.approx(1e-4 * 0.5 * (1 + np.cos(np.pi * 9 / 160)))
    assert lr_at(119, cfg) == pytest.approx(1e-4 * 0.5 * (1 + np.cos(np.pi * 119 / 160)))
