"""Labelled images in the layouts people keep them in, found from one path (stdlib + numpy only;
nothing here decodes an image).

`open_images(source, synset_words=None)` returns an `ImageSet`: the images, their class indices
(-1 when unknown), the class names the layout carries, and which layout it was. A path is read as:

- a ``.csv`` file -> `Layout.CSV`: columns ``file,class_index`` and optionally ``class_name``
  (other columns, e.g. ``synset``, are ignored). Relative paths are taken from a ``sample/``
  folder beside the CSV when every listed file is there, else from the CSV's own folder (the
  one holding more of them when neither holds all); absolute paths are used as they are.
- a folder with images directly inside, every one named ``n01440764_<anything>.<ext>``, and
  `synset_words` given -> `Layout.SYNSET_FILES`: labels are line numbers in synset_words.txt.
  Without `synset_words` the same folder is a `Layout.PLAIN_FOLDER` (labels -1): calibration
  needs no labels, and a caller that wants them can see `labelled` is False (the CLI passes the
  shared synset_words.txt by itself when it exists). With `synset_words` given, a folder where
  some images have a synset prefix and others do not is an error rather than a silently
  unlabelled set.
- a folder with other images directly inside -> `Layout.PLAIN_FOLDER` (labels -1). Sub-folders
  without images beside them are ignored.
- a folder with no images directly inside and sub-folders holding images ->
  `Layout.IMAGE_FOLDER`, read exactly as torchvision's ``ImageFolder``: every sub-folder is a
  class, class index = position in the sorted sub-folder names, images are found recursively
  (following links) under each class folder and listed in torchvision's order; a class folder
  without images is an error naming it, as in torchvision. `synset_words` is not used: a
  folder of ten synset-named class folders gives classes 0..9, as torchvision does.
- images directly inside *and* sub-folders holding images: an error (the two layouts mixed).

Every problem is an `errors.DataError` naming the path, the problem and the fix.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # class index, -1 when unknown

__all__ = ["IMAGE_FOLDER_EXTENSIONS", "ImageSet", "Layout", "open_images", "read_csv_labels", "read_label_lines"]

# torchvision.datasets.folder.IMG_EXTENSIONS, matched as torchvision does (lower-cased endswith)
IMAGE_FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SYNSET_PREFIX = re.compile(r"n\d{8}_")
ACCEPTED = ("pass a folder of images, an ImageFolder root (one sub-folder of images per class) "
            "or a labels .csv with columns file,class_index")
_SHOW = 5  # how many paths an error message lists


class Layout(str, Enum):
    CSV = "csv"  # file,class_index[,class_name][,synset] (extra columns ignored)
    IMAGE_FOLDER = "imagefolder"  # torchvision ImageFolder: root/<class>/**/<image>
    SYNSET_FILES = "synset"  # a folder of <synset>_*.JPEG labelled through synset_words.txt
    PLAIN_FOLDER = "plain"  # a folder of images without labels (label -1)


@dataclass(frozen=True)
class ImageSet:
    source: Path
    layout: Layout
    items: tuple[LabelledImage, ...]  # label -1 when unlabelled
    class_names: dict[int, str] = field(default_factory=dict)  # names the images carry, by class index

    @property
    def labelled(self) -> bool:
        """True when every image has a class index (>= 0)."""
        return bool(self.items) and all(it.label >= 0 for it in self.items)

    def names_for(self, num_classes: int) -> tuple[str, ...] | None:
        """The names of classes 0..num_classes-1 when this set names every one of them, else None."""
        _check_num_classes(num_classes)
        if all(i in self.class_names for i in range(num_classes)):
            return tuple(self.class_names[i] for i in range(num_classes))
        return None

    def check_labels(self, num_classes: int) -> None:
        """DataError when an image's label is not a class of a `num_classes`-class model."""
        _check_num_classes(num_classes)
        bad = [it for it in self.items if it.label >= num_classes]
        if not bad:
            return
        first = bad[0]
        msg = (f"{first.path}: label {first.label}, but the model has {num_classes} classes "
               f"(0..{num_classes - 1}); {len(bad)} of {len(self.items)} images from {self.source} "
               "have labels outside that range")
        if self.layout is Layout.IMAGE_FOLDER:
            fix = (f"the {len(self.class_names)} class folders give labels 0..{len(self.class_names) - 1}: "
                   f"use a model with {len(self.class_names)} classes, or keep at most {num_classes} class folders")
        elif self.layout is Layout.CSV:
            fix = f"fix their class_index in {self.source}, or use the model the labels were made for"
        else:
            fix = "pass the synset words of the classes the model was trained on"
        raise DataError(f"{msg}; {fix}")


def _check_num_classes(num_classes) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"num_classes={num_classes!r}: expected a whole number of classes, 1 or more")


# ---------------------------------------------------------------- open_images


def open_images(source: str | os.PathLike, *, synset_words: str | os.PathLike | None = None) -> ImageSet:
    """The images at `source` (a labels .csv, a folder of images or an ImageFolder root) with
    their labels and class names; the module docstring gives the rules."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: not found; {ACCEPTED}")
    if source.is_dir():
        return _open_folder(source, synset_words)
    if source.is_file() and source.suffix.lower() == ".csv":
        items, names = read_csv_labels(source)
        return ImageSet(source, Layout.CSV, tuple(items), names)
    raise DataError(f"{source}: neither a labels .csv file nor a folder of images; {ACCEPTED}")


def _open_folder(folder: Path, synset_words) -> ImageSet:
    top = list_images(folder)
    subdirs = _class_folders(folder)
    if top:
        holding = [d for d in subdirs if _holds_images(folder / d)]
        if holding:
            raise DataError(
                f"{folder}: holds images directly inside (e.g. {top[0].name}) and sub-folders of images "
                f"(e.g. {holding[0]}/); a folder of images has them all at its top, an ImageFolder root "
                "has them all in one sub-folder per class: move the top images into class folders, "
                "move the sub-folders elsewhere, or pass one of the two")
        named = [p for p in top if SYNSET_PREFIX.match(p.name)]
        if synset_words is None or not named:
            return ImageSet(folder, Layout.PLAIN_FOLDER, tuple(LabelledImage(p, -1) for p in top), {})
        if len(named) < len(top):
            other = [p.name for p in top if not SYNSET_PREFIX.match(p.name)]
            raise DataError(
                f"{folder}: {len(named)} of {len(top)} images are named <synset>_<name> but {len(other)} "
                f"are not ({_some(other)}), so they cannot be labelled through {Path(synset_words).name}: "
                "rename them n01440764_<name>.<ext>, move them out, or list the images in a labels .csv")
        names = dict(enumerate(read_class_names(synset_words)))
        items = labelled_folder(folder, synset_words)
        return ImageSet(folder, Layout.SYNSET_FILES, tuple(items), names)
    if not subdirs:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_FOLDER_EXTENSIONS)}) in this folder; {ACCEPTED}")
    return _image_folder(folder, subdirs)


def _class_folders(root: Path) -> list[str]:
    """torchvision's DatasetFolder.find_classes: every sub-folder (links followed), sorted."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_FOLDER_EXTENSIONS)


def _holds_images(folder: Path) -> bool:
    return any(_is_image_name(f) for _, _, files in os.walk(folder, followlinks=True) for f in files)


def _image_folder(root: Path, classes: list[str]) -> ImageSet:
    """torchvision's make_dataset: per class in sorted order, sorted(os.walk(...)), sorted files."""
    items, empty = [], []
    for index, name in enumerate(classes):
        found = [LabelledImage(Path(walk_root) / f, index)
                 for walk_root, _, files in sorted(os.walk(root / name, followlinks=True))
                 for f in sorted(files) if _is_image_name(f)]
        if not found:
            empty.append(name)
        items.extend(found)
    if not items:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_FOLDER_EXTENSIONS)}) in this folder or its "
                        f"sub-folders ({_some(classes)}); {ACCEPTED}")
    if empty:
        raise DataError(
            f"{root}: read as an ImageFolder root (one sub-folder per class), but {len(empty)} class "
            f"folder(s) hold no images: {_some([str(root / e) for e in empty])}; add images to them or "
            "remove them (torchvision's ImageFolder refuses them too, and class indices follow the "
            "sorted folder names)")
    return ImageSet(root, Layout.IMAGE_FOLDER, tuple(items), dict(enumerate(classes)))


def _some(names: list[str]) -> str:
    return ", ".join(names[:_SHOW]) + (" ..." if len(names) > _SHOW else "")


# ---------------------------------------------------------------- CSV


def read_csv_labels(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None = None
                    ) -> tuple[list[LabelledImage], dict[int, str]]:
    """(images, class names) from a CSV with columns file,class_index[,class_name] (any others
    ignored; header names are matched without case or surrounding spaces). Relative paths are
    looked up in `image_dir`, else as the module docstring says. Errors name the CSV line: a
    class_index that is not an integer or below -1, an empty file cell, a file listed twice, one
    class_index given two names; and the listed files that do not exist."""
    csv_path = Path(csv_path)
    text = _read_text(csv_path, "label file", "a CSV with columns file,class_index")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    cols = {c.strip().lower(): i for i, c in reversed(list(enumerate(header or [])))}
    need = ("file", "class_index")
    # (line of the row's last physical line, row); blank lines and quoted newlines count
    rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    if not all(c in cols for c in need) or not rows:
        problem = "no image rows" if all(c in cols for c in need) else "missing a column"
        raise DataError(f"{csv_path}: {problem}; expected a CSV with columns file,class_index "
                        "(and optionally class_name), one row per image")
    fi, li, ni = cols["file"], cols["class_index"], cols.get("class_name")
    entries, names, seen = [], {}, {}
    for line, row in rows:
        where = f"{csv_path}:{line}"
        if len(row) <= max(fi, li):
            raise DataError(f"{where}: the row has {len(row)} column(s), the header has {len(header)}; "
                            "give every row a file and a class_index")
        file, raw = row[fi].strip(), row[li].strip()
        if not file:
            raise DataError(f"{where}: the file column is empty; name the image or remove the row")
        try:
            label = int(raw)
        except ValueError:
            raise DataError(f"{where}: class_index {raw!r} is not an integer") from None
        if label < -1:
            raise DataError(f"{where}: class_index {label} is negative; use 0.. (or -1 for an unlabelled image)")
        if file in seen:
            raise DataError(f"{where}: {file} is listed again (first on line {seen[file]}); "
                            "list each image once")
        seen[file] = line
        name = row[ni].strip() if ni is not None and ni < len(row) else ""
        if name and label >= 0:
            first = names.setdefault(label, (name, line))
            if first[0] != name:
                raise DataError(
                    f"{csv_path}: class_index {label} is named {first[0]!r} on line {first[1]} and "
                    f"{name!r} on line {line}; give each class_index one class_name")
        entries.append((file, label))
    base = Path(image_dir) if image_dir is not None else _image_base(csv_path, [f for f, _ in entries])
    missing = [f for f, _ in entries if not (base / f).is_file()]
    if missing:
        raise DataError(
            f"{csv_path}: {len(missing)} listed file(s) missing from {base}: {_some(missing)}; relative "
            f"paths in the file column are read from {base}: fix the paths or add the images")
    items = [LabelledImage(base / f, label) for f, label in entries]
    return items, {i: n for i, (n, _) in sorted(names.items())}


def _image_base(csv_path: Path, files: list[str]) -> Path:
    """`sample/` beside the CSV when it holds every relative file, else the CSV's folder when it
    does; failing both, whichever holds more (sample/ on a tie), so the error lists the fewest."""
    here = csv_path.parent
    candidates = [here / "sample", here] if (here / "sample").is_dir() else [here]
    relative = [f for f in files if not Path(f).is_absolute()]
    best, best_found = candidates[0], -1
    for c in candidates:
        found = sum((c / f).is_file() for f in relative)
        if found == len(relative):
            return c
        if found > best_found:
            best, best_found = c, found
    return best


# ---------------------------------------------------------------- label lines


def read_label_lines(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names, one per line in class-index order (line 1 is class 0). Surrounding spaces are
    stripped, blank lines at the end ignored, a UTF-8 BOM skipped; a blank line before the last
    name is an error naming it. The whole line is the name (synset_words.txt files, with a synset
    id before the name, are read by data.read_class_names)."""
    path = Path(path)
    what = "a text file with one class name per line, in class-index order"
    text = _read_text(path, "class names", what)
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no class names in it; expected {what}")
    for n, ln in enumerate(lines, 1):
        if not ln:
            raise DataError(f"{path}:{n}: blank line among the class names (line n names class n-1); "
                            "name the class or remove the line")
    return tuple(lines)


def _read_text(path: Path, what: str, expected: str) -> str:
    if not path.exists():
        raise DataError(f"{path}: not found; pass {expected}")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass {expected}")
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig: a spreadsheet's BOM is not text
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded); save the "
                        f"{what} as UTF-8") from None


# ---------------------------------------------------------------- labels


def _synset_words(path: str | os.PathLike, what: str) -> list[tuple[str, str]]:
    """(synset id, name) per non-empty line of synset_words.txt, in class-index order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; pass a synset_words.txt with one "
                        "'n01440764 tench, Tinca tinca' line per class, in class-index order")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save the {what} file as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    out = []
    for line in lines:
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            out.append((wnid, name.strip()))
    return out


def read_class_names(path: str | os.PathLike) -> list[str]:
    """synset_words.txt: line i is class i, `n01440764 tench, Tinca tinca` -> "tench, Tinca tinca"."""
    names = [name or wnid for wnid, name in _synset_words(path, "class names")]
    if not names:
        raise DataError(f"{Path(path)}: no class names in it; expected one 'synset name' per line")
    return names


def read_synsets(path: str | os.PathLike) -> list[str]:
    """The synset id of each class, in class-index order, from synset_words.txt."""
    return [wnid for wnid, _ in _synset_words(path, "synsets")]


def read_labels_csv(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[LabelledImage]:
    """`file,class_index[,class_name]` rows (other columns ignored) -> labelled images, files
    relative to `image_dir` (default: a `sample/` folder beside the CSV when it holds them all,
    else the CSV's folder). Errors name the CSV line, or the listed files that are missing
    (read_csv_labels has the rules)."""
    return read_csv_labels(csv_path, image_dir)[0]


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def looks_synset_named(folder: str | os.PathLike) -> bool:
    """True when the folder's images are named `<synset>_...` (e.g. n01440764_tench.JPEG)."""
    images = list_images(folder)
    return bool(images) and all(re.match(r"n\d{8}_", p.name) for p in images)


def labelled_folder(folder: str | os.PathLike, synset_words: str | os.PathLike) -> list[LabelledImage]:
    """Images named `<synset>_<anything>.<ext>` labelled through synset_words.txt."""
    index = {s: i for i, s in enumerate(read_synsets(synset_words))}
    out, unknown = [], []
    for p in list_images(folder):
        wnid = p.name.split("_", 1)[0]
        if wnid not in index:
            unknown.append(p.name)
        else:
            out.append(LabelledImage(p, index[wnid]))
    if unknown:
        raise DataError(
            f"{folder}: {len(unknown)} file name(s) do not start with a known synset id "
            f"(e.g. {unknown[0]}); name them <synset>_<name>.JPEG or give a labels CSV"
        )
    return out


def load_dataset(source: str | os.PathLike, *, synset_words: str | os.PathLike | None = None) -> list[LabelledImage]:
    """The labelled images at `source`: a labels CSV, a folder of images (synset-prefixed ones
    labelled through `synset_words`, others with label -1) or an ImageFolder root. The list of
    `open_images(source, synset_words=...).items`, which also gives the layout and
    the class names."""
    return list(open_images(source, synset_words=synset_words).items)
