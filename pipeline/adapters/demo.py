"""`demo`: the generated demo dataset (`pipeline.demo.generate`), made on first use when missing."""
from __future__ import annotations

import csv
import json

from pipeline.adapters.base import Adapter, Listing, VideoEntry, canonical_label, video_id_for
from pipeline.errors import DatasetError
from pipeline.io import atomic_path

GENERATE_OPTIONS = ("seed", "videos_per_class_per_identity", "n_frames", "size", "episode", "identities", "rig",
                    "distractors", "blends", "parents", "strength")


class DemoAdapter(Adapter):
    name = "demo"
    known_options = GENERATE_OPTIONS
    description = "Short expression videos generated deterministically from real face photos (no download)."
    layout = ("  <root>/labels.csv               video,label,subject,apex_start,apex_end[,episode_start,\n"
              "                                  episode_end,n_frames,group]; video relative to <root>\n"
              "  <root>/<class>/<identity>_<k>.mp4\n"
              "  Generated into <root> when labels.csv is missing (options: seed,\n"
              "  videos_per_class_per_identity, n_frames [min, max], size, episode transient|sustained,\n"
              "  identities: how many of the shipped people, default all; rig tps|au; distractors\n"
              "  basic|rich|harsh; blends: morphs per pair of people, a family sharing one fold group;\n"
              "  parents: false keeps only the morphs, people no default was chosen on;\n"
              "  strength [min, max]: each video's apex strength, default [0.85, 1.15]).")
    protocol = "subject-independent k-fold over the face identities (train-head --folds)"

    def settings(self) -> dict:
        """What the generated videos depend on; recorded in `.generation.json` beside labels.csv."""
        from pipeline.demo.generate import GENERATOR_VERSION, STRENGTH

        return {"seed": int(self.options.get("seed", 0)),
                "videos_per_class_per_identity": int(self.options.get("videos_per_class_per_identity", 2)),
                "n_frames": [int(n) for n in self.options.get("n_frames", (60, 90))],
                "size": int(self.options.get("size", 256)), "fps": float(self.fps),
                "episode": str(self.options.get("episode", "transient")),
                "identities": int(self.options["identities"]) if self.options.get("identities") else None,
                "rig": str(self.options.get("rig", "tps")),
                "distractors": str(self.options.get("distractors", "basic")),
                "blends": int(self.options.get("blends", 0)), "generator": GENERATOR_VERSION,
                # only when not the default, so that the stamps of sets made before the option stay current
                **({"parents": False} if not self.parents else {}),
                **({"strength": self.strength} if self.strength != list(STRENGTH) else {})}

    @property
    def parents(self) -> bool:
        value = self.options.get("parents", True)
        if not isinstance(value, bool):
            raise DatasetError(f"demo: option parents must be true or false, got {value!r}")
        return value

    @property
    def strength(self) -> list[float]:
        from pipeline.demo.generate import STRENGTH

        value = self.options.get("strength", STRENGTH)
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise DatasetError(f"demo: option strength must be [min, max], got {value!r}") from None
        return [lo, hi]  # the generator checks the range before it writes anything

    def size(self) -> tuple[int, int]:
        """(videos, people) the settings generate, without generating: every person (the shipped ones, plus
        `blends` morphs of each pair) shows every class `videos_per_class_per_identity` times."""
        from pipeline.demo.assets import identities
        from pipeline.demo.blend import families
        from pipeline.demo.generate import CLASSES

        st = self.settings()
        named = identities(st["identities"])
        n_people = (len(named) if self.parents else 0) + st["blends"] * sum(len(f) > 1 for f in families(named))
        return n_people * len(CLASSES) * st["videos_per_class_per_identity"], n_people

    def list_videos(self) -> Listing:
        labels = self.root / "labels.csv"
        stamp = self.root / ".generation.json"
        current = json.loads(stamp.read_text()) if stamp.exists() else None
        if not labels.exists() or current != self.settings():
            # Missing, or made with other options: (re)generate, so a changed option is never ignored.
            labels.unlink(missing_ok=True)
            self._generate()
            with atomic_path(stamp) as tmp:
                tmp.write_text(json.dumps(self.settings()))
        listing = Listing(entries=[])
        with labels.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"video", "label", "subject", "apex_start", "apex_end"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"demo: {labels} lacks the columns {sorted(missing)} "
                                   f"(has {reader.fieldnames}).\nExpected layout:\n{self.layout}")
            for row in reader:
                path = self.root / row["video"]
                vid = video_id_for(path, self.root)
                if not path.exists():
                    listing.problems.append((vid, "missing", f"{path} is listed in labels.csv but absent"))
                    continue
                label = canonical_label(row["label"])
                if not self.keep(label, listing):
                    continue
                extra = {k: int(row[k]) for k in ("episode_start", "episode_end", "n_frames") if row.get(k)}
                listing.entries.append(VideoEntry(
                    video_id=vid, path=path, label=label, subject=row["subject"],
                    apex_start=int(row["apex_start"]), apex_end=int(row["apex_end"]), extra=extra,
                    group=row.get("group") or ""))
        return listing

    def _generate(self) -> None:
        from pipeline.demo.generate import CLASSES, generate_demo

        # an interrupted generation leaves class folders behind (rewritten identically); anything
        # else means the root is not a demo folder, and nothing is written into it
        present = sorted(self.root.iterdir()) if self.root.exists() else []
        foreign = [p.name for p in present if p.name not in CLASSES and not p.name.startswith(".")]
        if foreign:
            raise DatasetError(f"demo: {self.root} has no labels.csv and holds {foreign[:5]}; "
                               "point the demo root at an empty or missing folder to generate it there")
        for old in (p for p in present if p.is_dir()):  # videos of earlier settings: ours to replace
            for video in old.glob("*.mp4"):
                video.unlink()
        st = self.settings()
        try:
            generate_demo(self.root, seed=st["seed"], videos_per_class_per_identity=st["videos_per_class_per_identity"],
                          n_frames=tuple(st["n_frames"]), size=st["size"], fps=self.fps, episode=st["episode"],
                          n_identities=st["identities"], rig=st["rig"], distractors=st["distractors"],
                          blends=st["blends"], parents=self.parents, strength=tuple(self.strength))
        except ValueError as err:  # the generator checks its options before writing: say which, not a traceback
            raise DatasetError(f"demo: {err} (datasets.<name>.options)") from err
