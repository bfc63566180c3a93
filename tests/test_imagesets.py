"""Tests for edgesqueeze.imagesets: finding the layout of a path of images (labels CSV, ImageFolder
root, synset-named folder, plain folder), its labels and class names, and the errors a wrong
layout gives.

Every fixture is a few-pixel image written with OpenCV under tmp_path. The tests on the real
600-image sample use the `shared` fixture and are skipped with the reason when it is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgesqueeze.data import LabelledImage, load_dataset, load_image, read_class_names  # noqa: E402
from edgesqueeze.errors import DataError  # noqa: E402
from edgesqueeze.imagesets import ImageSet, Layout, open_images, read_label_lines  # noqa: E402

SYNSET_WORDS = (
    "n01440764 tench, Tinca tinca\n"
    "n01443537 goldfish, Carassius auratus\n"
    "n01484850 great white shark, white shark, man-eater\n"
)


def img(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels), f"cv2.imwrite failed for {path}"
    return path


def words(root: Path) -> Path:
    p = root / "synset_words.txt"
    p.write_text(SYNSET_WORDS, encoding="utf-8")
    return p


def rel(items, root: Path) -> list[tuple[str, int]]:
    return [(it.path.relative_to(root).as_posix(), it.label) for it in items]


# ---------------------------------------------------------------- ImageFolder


def make_image_folder(root: Path) -> Path:
    """Classes created out of order, a nested sub-folder, an upper-case suffix, non-images."""
    for name in ("zebra", "apple", "mango"):
        (root / name).mkdir(parents=True)
    img(root / "zebra" / "z2.png")
    img(root / "zebra" / "z1.jpg")
    img(root / "apple" / "b.PNG")
    img(root / "apple" / "deeper" / "more" / "a.jpeg")
    img(root / "apple" / "a.bmp")
    img(root / "mango" / "m.webp")
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / "mango" / "labels.csv").write_text("file,class_index\n")
    (root / "README.md").write_text("a file at the top is not a class")
    return root


def test_imagefolder_indices_follow_sorted_folder_names_and_torchvision_order(tmp_path):
    root = make_image_folder(tmp_path / "ds")
    s = open_images(root)
    assert s.layout is Layout.IMAGE_FOLDER and s.source == root
    # class by sorted folder name; files: sorted(os.walk(class)) roots, sorted names in each
    assert rel(s.items, root) == [
        ("apple/a.bmp", 0),
        ("apple/b.PNG", 0),
        ("apple/deeper/more/a.jpeg", 0),
        ("mango/m.webp", 1),
        ("zebra/z1.jpg", 2),
        ("zebra/z2.png", 2),
    ]
    assert s.labelled
    assert all(isinstance(it, LabelledImage) and it.path.is_file() for it in s.items)


def test_imagefolder_class_names_and_names_for(tmp_path):
    s = open_images(make_image_folder(tmp_path / "ds"))
    assert s.class_names == {0: "apple", 1: "mango", 2: "zebra"}
    assert s.names_for(3) == ("apple", "mango", "zebra")
    assert s.names_for(2) == ("apple", "mango")
    assert s.names_for(1000) is None  # three names do not name a 1000-class model


def test_imagefolder_ignores_synset_words(tmp_path):
    root = tmp_path / "ds"
    img(root / "n01484850" / "x.png")
    img(root / "n01443537" / "y.png")
    s = open_images(root, synset_words=words(tmp_path))
    assert s.layout is Layout.IMAGE_FOLDER
    assert rel(s.items, root) == [("n01443537/y.png", 0), ("n01484850/x.png", 1)]
    assert s.class_names == {0: "n01443537", 1: "n01484850"}


def test_imagefolder_empty_class_folder_is_named(tmp_path):
    root = make_image_folder(tmp_path / "ds")
    (root / "banana").mkdir()
    (root / "banana" / "readme.txt").write_text("no images")
    (root / "kiwi" / "nested").mkdir(parents=True)
    with pytest.raises(DataError, match="2 class folder") as ei:
        open_images(root)
    msg = str(ei.value)
    assert str(root / "banana") in msg and str(root / "kiwi") in msg
    assert "apple" not in msg.split("hold no images")[1]
    assert "add images" in msg and "remove" in msg


def test_subfolders_without_any_image_is_no_images(tmp_path):
    root = tmp_path / "ds"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "b" / "x.txt").write_text("text")
    with pytest.raises(DataError, match="no images") as ei:
        open_images(root)
    assert "ImageFolder root" in str(ei.value)


def test_images_at_top_and_class_folders_is_a_mixed_layout_error(tmp_path):
    root = make_image_folder(tmp_path / "ds")
    img(root / "stray.jpg")
    with pytest.raises(DataError, match="stray.jpg") as ei:
        open_images(root)
    msg = str(ei.value)
    assert "apple/" in msg
    assert "ImageFolder root" in msg and "move" in msg


def test_images_at_top_with_imageless_subfolder_is_a_plain_folder(tmp_path):
    root = tmp_path / "ds"
    img(root / "b.png")
    img(root / "a.jpg")
    (root / "thumbs.db.d").mkdir()
    (root / "thumbs.db.d" / "cache.bin").write_bytes(b"\0")
    s = open_images(root)
    assert s.layout is Layout.PLAIN_FOLDER
    assert rel(s.items, root) == [("a.jpg", -1), ("b.png", -1)]


# ---------------------------------------------------------------- synset-named and plain folders


def make_synset_folder(root: Path) -> Path:
    img(root / "n01484850_shark.jpg")
    img(root / "n01440764_tench.JPEG")
    img(root / "n01443537_gold_1.png")
    (root / "notes.txt").write_text("ignored")
    return root


def test_synset_folder_with_synset_words(tmp_path):
    root = make_synset_folder(tmp_path / "imgs")
    s = open_images(root, synset_words=words(tmp_path))
    assert s.layout is Layout.SYNSET_FILES
    assert {it.path.name: it.label for it in s.items} == {
        "n01440764_tench.JPEG": 0, "n01443537_gold_1.png": 1, "n01484850_shark.jpg": 2}
    assert s.labelled
    assert s.class_names == {0: "tench, Tinca tinca", 1: "goldfish, Carassius auratus",
                             2: "great white shark, white shark, man-eater"}
    assert s.names_for(3)[1] == "goldfish, Carassius auratus"
    assert s.names_for(4) is None


def test_synset_folder_without_synset_words_is_plain_and_unlabelled(tmp_path):
    root = make_synset_folder(tmp_path / "imgs")
    s = open_images(root)
    assert s.layout is Layout.PLAIN_FOLDER
    assert {it.label for it in s.items} == {-1} and len(s.items) == 3
    assert not s.labelled
    assert s.class_names == {} and s.names_for(1) is None


def test_synset_words_with_partly_synset_named_folder_is_an_error(tmp_path):
    root = make_synset_folder(tmp_path / "imgs")
    img(root / "holiday.jpg")
    with pytest.raises(DataError, match="holiday.jpg") as ei:
        open_images(root, synset_words=words(tmp_path))
    assert "3 of 4" in str(ei.value) and "rename" in str(ei.value)
    assert open_images(root).layout is Layout.PLAIN_FOLDER  # without synset words: plain


def test_synset_words_unknown_synset_names_the_file(tmp_path):
    root = make_synset_folder(tmp_path / "imgs")
    img(root / "n09999999_mystery.png")
    with pytest.raises(DataError, match="n09999999_mystery.png"):
        open_images(root, synset_words=words(tmp_path))


def test_plain_folder_with_synset_words_stays_plain(tmp_path):
    root = tmp_path / "photos"
    img(root / "cat.png")
    img(root / "dog.tif")
    (root / "cat.png.json").write_text("{}")
    s = open_images(root, synset_words=words(tmp_path))
    assert s.layout is Layout.PLAIN_FOLDER and s.layout == "plain"
    assert rel(s.items, root) == [("cat.png", -1), ("dog.tif", -1)]
    assert not s.labelled and s.class_names == {}


# ---------------------------------------------------------------- CSV


def make_csv(root: Path, text: str, files=("a.png", "b.png", "c.png"), folder: str = "") -> Path:
    for i, f in enumerate(files):
        img(root / folder / f, seed=i)
    p = root / "labels.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_with_class_name_and_extra_columns(tmp_path):
    p = make_csv(tmp_path, "file,synset,class_index,class_name,notes\n"
                           'a.png,n1,4,"tench, Tinca tinca",x\n'
                           "b.png,n2,2,goldfish,\n"
                           'c.png,n1,4,"tench, Tinca tinca",y\n')
    s = open_images(p)
    assert s.layout is Layout.CSV and s.source == p
    assert rel(s.items, tmp_path) == [("a.png", 4), ("b.png", 2), ("c.png", 4)]
    assert s.class_names == {2: "goldfish", 4: "tench, Tinca tinca"}
    assert s.names_for(3) is None  # classes 0 and 1 are not named
    assert s.labelled


def test_csv_without_class_name_and_loose_header(tmp_path):
    p = make_csv(tmp_path, "\ufeff File , CLASS_INDEX\na.png,1\n\nb.png, 0\nc.png,-1\n")
    s = open_images(p)
    assert rel(s.items, tmp_path) == [("a.png", 1), ("b.png", 0), ("c.png", -1)]
    assert s.class_names == {}
    assert not s.labelled  # c.png is unlabelled


def test_csv_names_every_class(tmp_path):
    p = make_csv(tmp_path, "file,class_index,class_name\na.png,1,dog\nb.png,0,cat\nc.png,1,dog\n")
    assert open_images(p).names_for(2) == ("cat", "dog")


def test_csv_same_index_two_names_names_both_lines(tmp_path):
    p = make_csv(tmp_path, "file,class_index,class_name\na.png,1,dog\nb.png,0,cat\nc.png,1,wolf\n")
    with pytest.raises(DataError, match=r"class_index 1 is named 'dog' on line 2 and 'wolf' on line 4"):
        open_images(p)


def test_csv_paths_from_sample_folder_csv_folder_or_absolute(tmp_path):
    p = make_csv(tmp_path, "file,class_index\na.png,0\nb.png,1\n", files=("a.png", "b.png"), folder="sample")
    assert [it.path.parent for it in open_images(p).items] == [tmp_path / "sample"] * 2
    # sample/ exists but the CSV lists paths relative to its own folder
    q = make_csv(tmp_path / "other", "file,class_index\nimgs/a.png,0\n", files=("imgs/a.png",))
    (tmp_path / "other" / "sample").mkdir()
    assert [it.path for it in open_images(q).items] == [tmp_path / "other" / "imgs" / "a.png"]
    absolute = img(tmp_path / "elsewhere" / "z.png")
    r = tmp_path / "abs.csv"
    r.write_text(f"file,class_index\n{absolute},7\n", encoding="utf-8")
    assert [(it.path, it.label) for it in open_images(r).items] == [(absolute, 7)]


def test_csv_missing_files_lists_the_first_few(tmp_path):
    listed = "".join(f"gone{i}.png,0\n" for i in range(7))
    p = make_csv(tmp_path, "file,class_index\na.png,0\n" + listed, files=("a.png",))
    with pytest.raises(DataError, match="7 listed file") as ei:
        open_images(p)
    msg = str(ei.value)
    assert "gone0.png, gone1.png, gone2.png, gone3.png, gone4.png ..." in msg
    assert "gone5.png" not in msg and "a.png" not in msg
    assert "fix the paths or add the images" in msg


@pytest.mark.parametrize("text, pattern", [
    ("file,class_index\na.png,0\na.png,1\n", r"labels\.csv:3: a\.png is listed again \(first on line 2\)"),
    ("file,class_index\na.png,-2\n", r"labels\.csv:2: class_index -2 is negative"),
    ("file,class_index\n,0\n", r"labels\.csv:2: the file column is empty"),
    ("file,class_index\na.png,x\n", r"labels\.csv:2: class_index 'x' is not an integer"),
    ("file,label\na.png,0\n", r"missing a column; expected a CSV with columns file,class_index"),
    ("file,class_index\n\n", r"no image rows"),
])
def test_csv_bad_rows_name_the_line_and_the_fix(tmp_path, text, pattern):
    p = make_csv(tmp_path, text)
    with pytest.raises(DataError, match=pattern):
        open_images(p)


def test_csv_that_is_not_utf8_is_a_data_error(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_bytes(b"file,class_index,class_name\na.png,0,caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        open_images(p)


# ---------------------------------------------------------------- check_labels / names_for


def test_check_labels_names_the_file_the_label_the_count_and_the_fix(tmp_path):
    root = make_image_folder(tmp_path / "ds")
    s = open_images(root)
    s.check_labels(3)  # labels 0..2 fit a 3-class model
    s.check_labels(1000)
    with pytest.raises(DataError) as ei:
        s.check_labels(2)
    msg = str(ei.value)
    assert str(root / "zebra" / "z1.jpg") in msg
    assert "label 2, but the model has 2 classes (0..1)" in msg
    assert "2 of 6 images" in msg
    assert "3 class folders" in msg and "model with 3 classes" in msg
    p = make_csv(tmp_path / "c", "file,class_index\na.png,0\nb.png,12\nc.png,-1\n")
    with pytest.raises(DataError, match=r"b\.png: label 12, .*fix their class_index in .*labels\.csv"):
        open_images(p).check_labels(10)
    open_images(p).check_labels(13)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_num_classes_is_a_data_error(tmp_path, bad):
    s = ImageSet(tmp_path, Layout.PLAIN_FOLDER, (LabelledImage(tmp_path / "a.png", -1),), {})
    with pytest.raises(DataError, match="num_classes"):
        s.names_for(bad)
    with pytest.raises(DataError, match="num_classes"):
        s.check_labels(bad)


# ---------------------------------------------------------------- not found and other paths


def test_not_found_messages(tmp_path):
    gone = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"nowhere: not found; pass a folder of images, an ImageFolder root"
                                        r".*labels \.csv"):
        open_images(gone)
    with pytest.raises(DataError, match="nowhere: not found"):
        load_dataset(gone)
    with pytest.raises(DataError, match=r"pic\.png: not found"):
        load_image(tmp_path / "pic.png")
    with pytest.raises(DataError, match=r"names\.txt: not found"):
        read_label_lines(tmp_path / "names.txt")
    with pytest.raises(DataError, match=r"synset_words\.txt: not found"):
        read_class_names(tmp_path / "synset_words.txt")


def test_a_file_that_is_not_a_csv_and_an_empty_folder_are_errors(tmp_path):
    p = img(tmp_path / "single.png")
    with pytest.raises(DataError, match=r"single\.png: neither a labels \.csv file nor a folder"):
        open_images(p)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match=r"empty: no images \(\.jpg"):
        open_images(empty)


def test_load_dataset_is_the_list_of_open_images_items(tmp_path):
    root = make_image_folder(tmp_path / "ds")
    got = load_dataset(root)
    assert isinstance(got, list)
    assert got == list(open_images(root).items)
    assert [it.label for it in got] == [0, 0, 0, 1, 2, 2]


# ---------------------------------------------------------------- read_label_lines


def test_read_label_lines_strips_skips_bom_and_trailing_blanks(tmp_path):
    p = tmp_path / "names.txt"
    p.write_bytes("\ufeff  cat \r\nhot dog\n\u00e9clair\t\n\n  \n".encode("utf-8"))
    assert read_label_lines(p) == ("cat", "hot dog", "\u00e9clair")
    p.write_text("n01440764 tench, Tinca tinca\n", encoding="utf-8")
    assert read_label_lines(p) == ("n01440764 tench, Tinca tinca",)  # the whole line is the name


@pytest.mark.parametrize("text, pattern", [
    ("cat\n\ndog\n", r"names\.txt:2: blank line"),
    ("\ncat\n", r"names\.txt:1: blank line"),
    ("\n \n", r"no class names"),
    ("", r"no class names"),
])
def test_read_label_lines_errors(tmp_path, text, pattern):
    p = tmp_path / "names.txt"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=pattern):
        read_label_lines(p)


def test_read_label_lines_folder_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_label_lines(tmp_path)
    p = tmp_path / "names.txt"
    p.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_label_lines(p)


# ---------------------------------------------------------------- the real sample


def csv_labels(csv_path: Path) -> dict[str, int]:
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        return {row["file"]: int(row["class_index"]) for row in csv.DictReader(f)}


def test_real_sample_csv_and_folder_give_the_same_600_labels(shared):
    imagenet = shared / "imagenet"
    expected = csv_labels(imagenet / "sample_labels.csv")
    items = load_dataset(imagenet / "sample_labels.csv")
    assert len(items) == 600
    assert {it.path.name: it.label for it in items} == expected
    assert all(it.path.parent == imagenet / "sample" for it in items)
    folder = open_images(imagenet / "sample", synset_words=imagenet / "synset_words.txt")
    assert folder.layout is Layout.SYNSET_FILES and len(folder.items) == 600
    assert {it.path.name: it.label for it in folder.items} == expected
    names = read_class_names(imagenet / "synset_words.txt")
    assert folder.names_for(1000) == tuple(names)
    s = open_images(imagenet / "sample_labels.csv")
    assert s.layout is Layout.CSV and s.labelled
    assert all(s.class_names[i] == names[i] for i in s.class_names)
    s.check_labels(1000)
