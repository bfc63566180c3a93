"""Tests for edgesqueeze.data: image loading, preprocessing, label files, datasets and the
calibration/evaluation split.

Every fixture is built in code under tmp_path (numpy arrays written with OpenCV); nothing is
written anywhere else. The one test on the real 600-image sample is marked `shared` and runs
when the shared data folder is found (conftest: the CLI's rule).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgesqueeze.arch import CAFFE_PREPROCESS, TORCHVISION_PREPROCESS, Preprocess  # noqa: E402
from edgesqueeze.data import (  # noqa: E402
    LabelledImage,
    labelled_folder,
    list_images,
    load_dataset,
    load_image,
    load_pixels,
    normalize,
    read_class_names,
    read_labels_csv,
    read_synsets,
    split_calibration,
    to_uint8_input,
)
from edgesqueeze.errors import DataError  # noqa: E402

SYNSET_WORDS = (
    "n01440764 tench, Tinca tinca\n"
    "n01443537 goldfish, Carassius auratus\n"
    "n01484850 great white shark, white shark, man-eater\n"
)


def rng_image(h: int, w: int, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if c == 1 else (h, w, c)
    return rng.integers(0, hi, size=shape, dtype=dtype)


def write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img), f"cv2.imwrite failed for {path}"
    return path


# ---------------------------------------------------------------- load_image


def test_png_round_trip_keeps_bgr_order(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, :, 0] = 200  # blue
    img[:, :, 1] = 50  # green
    img[:, :, 2] = 10  # red
    img[1, 2] = (1, 2, 3)
    out = load_image(write(tmp_path / "known.png", img))
    assert out.shape == (4, 6, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, img)
    assert tuple(out[0, 0]) == (200, 50, 10)
    assert tuple(out[1, 2]) == (1, 2, 3)


def test_png_round_trip_random_pixels(tmp_path):
    img = rng_image(17, 23, seed=1)
    np.testing.assert_array_equal(load_image(write(tmp_path / "r.png", img)), img)


def test_jpeg_round_trip(tmp_path):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :24] = (255, 0, 0)  # left half blue
    img[:, 24:] = (0, 0, 255)  # right half red
    out = load_image(write(tmp_path / "two.jpg", img))
    assert out.shape == (32, 48, 3)
    assert out.dtype == np.uint8
    # lossy, but the colours stay where they were (BGR order kept)
    left, right = out[:, :16].reshape(-1, 3).mean(0), out[:, 32:].reshape(-1, 3).mean(0)
    assert left[0] > 200 and left[2] < 60
    assert right[2] > 200 and right[0] < 60


def test_uppercase_jpeg_suffix_and_path_object_or_str(tmp_path):
    img = rng_image(8, 8, seed=2)
    p = write(tmp_path / "x.png", img)
    q = tmp_path / "n01440764_fish.JPEG"
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    q.write_bytes(buf.tobytes())
    assert load_image(str(p)).shape == (8, 8, 3)
    assert load_image(q).shape == (8, 8, 3)


def test_grayscale_png_gives_three_equal_channels(tmp_path):
    grey = rng_image(9, 11, c=1, seed=3)
    out = load_image(write(tmp_path / "g.png", grey))
    assert out.shape == (9, 11, 3)
    assert out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], grey)


def test_rgba_png_drops_alpha_keeps_colour(tmp_path):
    bgra = rng_image(7, 5, c=4, seed=4)
    bgra[:, :, 3] = np.arange(35, dtype=np.uint8).reshape(7, 5)  # alpha varies, must not matter
    p = write(tmp_path / "a.png", bgra)
    assert cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED).shape[2] == 4  # really RGBA
    out = load_image(p)
    assert out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, bgra[:, :, :3])


def test_16bit_colour_png_scaled_to_8bit(tmp_path):
    img16 = rng_image(6, 4, seed=5, dtype=np.uint16)
    img16[0, 0] = (0x1234, 0xFFFF, 0x00FF)
    p = write(tmp_path / "deep.png", img16)
    assert cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = load_image(p)
    assert out.dtype == np.uint8
    assert out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, (img16 >> 8).astype(np.uint8))
    assert tuple(out[0, 0]) == (0x12, 0xFF, 0x00)


def test_16bit_grey_png_scaled_to_8bit(tmp_path):
    g16 = rng_image(5, 5, c=1, seed=6, dtype=np.uint16)
    out = load_image(write(tmp_path / "deepgrey.png", g16))
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], (g16 >> 8).astype(np.uint8))


def test_one_pixel_image(tmp_path):
    img = np.array([[[7, 8, 9]]], np.uint8)
    out = load_image(write(tmp_path / "one.png", img))
    assert out.shape == (1, 1, 3)
    assert tuple(out[0, 0]) == (7, 8, 9)


def test_zero_byte_file_is_a_data_error_naming_it(tmp_path):
    p = tmp_path / "empty_pic.jpg"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty_pic.jpg") as ei:
        load_image(p)
    assert "empty" in str(ei.value)


def test_text_with_jpg_suffix_is_a_data_error_naming_it(tmp_path):
    p = tmp_path / "not_really.jpg"
    p.write_text("this is not a JPEG at all\n" * 10)
    with pytest.raises(DataError, match="not_really.jpg") as ei:
        load_image(p)
    assert "decode" in str(ei.value) or "readable" in str(ei.value)


def test_truncated_jpeg_is_an_error_or_an_image_never_a_crash(tmp_path):
    ok, buf = cv2.imencode(".jpg", rng_image(64, 64, seed=7))
    assert ok
    p = tmp_path / "trunc.jpg"
    p.write_bytes(buf.tobytes()[:20])  # header only
    with pytest.raises(DataError, match="trunc.jpg"):
        load_image(p)


def test_missing_file_is_a_data_error(tmp_path):
    p = tmp_path / "nowhere.png"
    with pytest.raises(DataError, match="nowhere.png"):
        load_image(p)


def test_directory_is_not_an_image(tmp_path):
    d = tmp_path / "adir.png"
    d.mkdir()
    with pytest.raises(DataError, match="adir.png"):
        load_image(d)


# ---------------------------------------------------------------- to_uint8_input


def test_caffe_input_shape_dtype_and_hand_computation():
    img = rng_image(300, 400, seed=8)
    out = to_uint8_input(img, CAFFE_PREPROCESS)
    assert out.shape == (227, 227, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    expected = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR_EXACT)[14:241, 14:241]
    np.testing.assert_array_equal(out, expected)


def test_caffe_input_keeps_bgr():
    img = np.zeros((100, 150, 3), np.uint8)
    img[:] = (255, 0, 0)  # pure blue, BGR
    out = to_uint8_input(img, CAFFE_PREPROCESS)
    assert (out[:, :, 0] == 255).all()
    assert (out[:, :, 1:] == 0).all()


def test_caffe_input_already_256_is_only_cropped():
    img = rng_image(256, 256, seed=9)
    np.testing.assert_array_equal(to_uint8_input(img, CAFFE_PREPROCESS), img[14:241, 14:241])


def test_torchvision_wide_image_short_side_256_centre_crop_rgb():
    h, w = 300, 500
    img = rng_image(h, w, seed=10)
    out = to_uint8_input(img, TORCHVISION_PREPROCESS)
    assert out.shape == (224, 224, 3)
    assert out.dtype == np.uint8
    rw = round(w * 256 / h)
    assert rw == 427
    resized = cv2.resize(img, (rw, 256), interpolation=cv2.INTER_LINEAR_EXACT)
    top, left = (256 - 224) // 2, (rw - 224) // 2
    assert (top, left) == (16, 101)
    expected = resized[top : top + 224, left : left + 224, ::-1]
    np.testing.assert_array_equal(out, expected)


def test_torchvision_tall_image_short_side_256():
    h, w = 500, 300
    img = rng_image(h, w, seed=11)
    out = to_uint8_input(img, TORCHVISION_PREPROCESS)
    resized = cv2.resize(img, (256, 427), interpolation=cv2.INTER_LINEAR_EXACT)
    expected = resized[101:325, 16:240, ::-1]
    np.testing.assert_array_equal(out, expected)


def test_torchvision_pure_blue_becomes_channel_2():
    img = np.zeros((300, 500, 3), np.uint8)
    img[:] = (255, 0, 0)  # pure blue in BGR
    out = to_uint8_input(img, TORCHVISION_PREPROCESS)
    assert (out[:, :, 2] == 255).all()  # RGB: blue is last
    assert (out[:, :, :2] == 0).all()


def test_torchvision_crop_is_centred_geometrically():
    # left half red, right half blue; after resizing 500 -> 427 and cropping 224 from column 101,
    # the boundary (original column 250, resized 213.5) lies at crop column 112.5
    img = np.zeros((300, 500, 3), np.uint8)
    img[:, :250] = (0, 0, 255)
    img[:, 250:] = (255, 0, 0)
    out = to_uint8_input(img, TORCHVISION_PREPROCESS)  # RGB
    assert (out[:, :112, 0] == 255).all() and (out[:, :112, 2] == 0).all()  # red on the left
    assert (out[:, 114:, 2] == 255).all() and (out[:, 114:, 0] == 0).all()  # blue on the right


def test_resize_smaller_than_crop_is_a_data_error():
    pre = Preprocess(style="caffe", channel_order="BGR", resize=(200, 200), crop=227, mean=(0.0, 0.0, 0.0))
    with pytest.raises(DataError, match="crop"):
        to_uint8_input(rng_image(300, 300), pre)


# ---------------------------------------------------------------- normalize


def test_normalize_caffe_constant_image_exact():
    x = np.full((227, 227, 3), 130, np.uint8)
    out = normalize(x, CAFFE_PREPROCESS)
    assert out.shape == (1, 3, 227, 227)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    for c, m in enumerate((104.0, 117.0, 123.0)):
        assert (out[0, c] == np.float32(130 - m)).all()


def test_normalize_torchvision_constant_image_exact():
    x = np.full((224, 224, 3), 200, np.uint8)
    out = normalize(x, TORCHVISION_PREPROCESS)
    assert out.shape == (1, 3, 224, 224)
    assert out.dtype == np.float32
    for c in range(3):
        m = np.float32(TORCHVISION_PREPROCESS.mean[c])
        s = np.float32(TORCHVISION_PREPROCESS.std[c])
        assert (out[0, c] == (np.float32(200) - m) / s).all()
    # and against the textbook formula on the 0..1 scale
    ref = (200 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out[0, :, 0, 0], ref, rtol=1e-5)


def test_normalize_puts_each_channel_on_its_own_plane():
    x = np.zeros((5, 7, 3), np.uint8)
    x[:, :, 0], x[:, :, 1], x[:, :, 2] = 10, 20, 30
    x[2, 3] = (40, 50, 60)
    pre = Preprocess(style="caffe", channel_order="BGR", resize=(5, 7), crop=5, mean=(1.0, 2.0, 3.0), std=(1.0, 2.0, 3.0))
    out = normalize(x, pre)
    assert out.shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(out[0, :, 0, 0], np.float32([9.0, 9.0, 9.0]))
    np.testing.assert_array_equal(out[0, :, 2, 3], np.float32([39.0, 24.0, 19.0]))


def test_normalize_batch_nhwc():
    x = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (0, 100, 255)])
    out = normalize(x, CAFFE_PREPROCESS)
    assert out.shape == (3, 3, 4, 6)
    assert out.dtype == np.float32
    for n, v in enumerate((0, 100, 255)):
        for c, m in enumerate((104.0, 117.0, 123.0)):
            assert (out[n, c] == np.float32(v - m)).all()


def test_normalize_matches_single_images_stacked():
    imgs = [rng_image(8, 8, seed=s) for s in range(3)]
    batch = normalize(np.stack(imgs), TORCHVISION_PREPROCESS)
    singles = np.concatenate([normalize(i, TORCHVISION_PREPROCESS) for i in imgs])
    np.testing.assert_array_equal(batch, singles)


# ---------------------------------------------------------------- class names / synsets


def test_read_class_names_and_synsets(tmp_path):
    p = tmp_path / "synset_words.txt"
    p.write_text(SYNSET_WORDS + "\n" + "n99999999\n", encoding="utf-8")  # blank line; no name
    names = read_class_names(p)
    assert names == [
        "tench, Tinca tinca",
        "goldfish, Carassius auratus",
        "great white shark, white shark, man-eater",
        "n99999999",
    ]
    assert read_synsets(p) == ["n01440764", "n01443537", "n01484850", "n99999999"]


def test_read_class_names_empty_file_is_a_data_error(tmp_path):
    p = tmp_path / "synset_words.txt"
    p.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="synset_words.txt"):
        read_class_names(p)
    p.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no class names"):
        read_class_names(p)


def test_read_class_names_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="absent.txt"):
        read_class_names(tmp_path / "absent.txt")
    with pytest.raises(DataError, match="absent.txt"):
        read_synsets(tmp_path / "absent.txt")


# ---------------------------------------------------------------- labels CSV


def make_csv_dataset(root: Path, *, in_sample: bool = True) -> Path:
    """root/labels.csv and three PNGs in root/sample (or root itself)."""
    img_dir = root / "sample" if in_sample else root
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("n01440764_a.png", "n01443537_b.png", "n01484850_c.png")):
        write(img_dir / name, rng_image(10, 10, seed=20 + i))
    csv_path = root / "labels.csv"
    csv_path.write_text(
        "file,synset,class_index,class_name\n"
        'n01440764_a.png,n01440764,0,"tench, Tinca tinca"\n'
        "n01443537_b.png,n01443537,1,goldfish\n"
        'n01484850_c.png,n01484850,2,"great white shark"\n',
        encoding="utf-8",
    )
    return csv_path


def test_read_labels_csv_uses_sample_folder(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    # a decoy of the same name beside the CSV must not be used
    write(tmp_path / "n01440764_a.png", rng_image(3, 3, seed=99))
    items = read_labels_csv(csv_path)
    assert [it.label for it in items] == [0, 1, 2]
    assert [it.path for it in items] == [
        tmp_path / "sample" / "n01440764_a.png",
        tmp_path / "sample" / "n01443537_b.png",
        tmp_path / "sample" / "n01484850_c.png",
    ]
    assert all(isinstance(it, LabelledImage) and it.path.is_file() for it in items)


def test_read_labels_csv_without_sample_folder_uses_csv_folder(tmp_path):
    csv_path = make_csv_dataset(tmp_path, in_sample=False)
    items = read_labels_csv(csv_path)
    assert [it.path.parent for it in items] == [tmp_path] * 3


def test_read_labels_csv_explicit_image_dir(tmp_path):
    csv_path = make_csv_dataset(tmp_path / "a")
    (tmp_path / "b").mkdir()
    for name in ("n01440764_a.png", "n01443537_b.png", "n01484850_c.png"):
        write(tmp_path / "b" / name, rng_image(4, 4))
    items = read_labels_csv(csv_path, image_dir=tmp_path / "b")
    assert all(it.path.parent == tmp_path / "b" for it in items)


def test_read_labels_csv_missing_file_is_named(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    (tmp_path / "sample" / "n01443537_b.png").unlink()
    with pytest.raises(DataError, match="n01443537_b.png") as ei:
        read_labels_csv(csv_path)
    msg = str(ei.value)
    assert "labels.csv" in msg
    assert "1 listed file" in msg
    assert "n01440764_a.png" not in msg  # the present files are not blamed


def test_read_labels_csv_non_integer_class_index_gives_line_number(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    csv_path.write_text(
        "file,class_index\n"
        "n01440764_a.png,0\n"
        "n01443537_b.png,one\n"
        "n01484850_c.png,2\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"labels\.csv:3: class_index 'one' is not an integer"):
        read_labels_csv(csv_path)


def test_read_labels_csv_line_number_counts_blank_and_multiline_rows(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    csv_path.write_text(
        "file,class_index,class_name\n"
        'n01440764_a.png,0,"two\nlines"\n'  # lines 2-3
        "\n"  # line 4, blank
        "n01443537_b.png,1.5,goldfish\n",  # line 5
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"labels\.csv:5: class_index '1\.5'"):
        read_labels_csv(csv_path)


def test_read_labels_csv_short_row_is_a_data_error(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    csv_path.write_text("file,class_index\nn01440764_a.png,0\nn01443537_b.png\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.csv:3"):
        read_labels_csv(csv_path)


@pytest.mark.parametrize(
    "text",
    [
        "path,label\nn01440764_a.png,0\n",  # wrong names
        "file,synset\nn01440764_a.png,n01440764\n",  # no class_index
        "class_index\n0\n",  # no file
        "file,class_index\n",  # header only
        "",  # empty
    ],
)
def test_read_labels_csv_wrong_columns_is_a_data_error(tmp_path, text):
    csv_path = make_csv_dataset(tmp_path)
    csv_path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match="columns file,class_index"):
        read_labels_csv(csv_path)


def test_read_labels_csv_missing_csv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="gone.csv"):
        read_labels_csv(tmp_path / "gone.csv")


# ---------------------------------------------------------------- folders


def make_synset_folder(root: Path) -> tuple[Path, Path]:
    folder = root / "imgs"
    folder.mkdir()
    write(folder / "n01443537_gold_1.png", rng_image(5, 5, seed=30))
    write(folder / "n01484850_shark.jpg", rng_image(5, 5, seed=31))
    write(folder / "n01440764_tench.JPEG", rng_image(5, 5, seed=32))
    (folder / "README.txt").write_text("not an image")
    (folder / "sub.png").mkdir()  # a folder, not a file
    words = root / "synset_words.txt"
    words.write_text(SYNSET_WORDS, encoding="utf-8")
    return folder, words


def test_list_images_filters_by_suffix_and_sorts(tmp_path):
    folder, _ = make_synset_folder(tmp_path)
    names = [p.name for p in list_images(folder)]
    assert names == sorted(names)
    assert set(names) == {"n01443537_gold_1.png", "n01484850_shark.jpg", "n01440764_tench.JPEG"}


def test_labelled_folder_labels_through_synset_words(tmp_path):
    folder, words = make_synset_folder(tmp_path)
    labels = {it.path.name: it.label for it in labelled_folder(folder, words)}
    assert labels == {"n01440764_tench.JPEG": 0, "n01443537_gold_1.png": 1, "n01484850_shark.jpg": 2}


def test_labelled_folder_unknown_synset_names_the_file(tmp_path):
    folder, words = make_synset_folder(tmp_path)
    write(folder / "n09999999_mystery.png", rng_image(5, 5))
    with pytest.raises(DataError, match="n09999999_mystery.png") as ei:
        labelled_folder(folder, words)
    assert "1 file name" in str(ei.value)


def test_load_dataset_csv(tmp_path):
    csv_path = make_csv_dataset(tmp_path)
    items = load_dataset(csv_path)
    assert [(it.path.name, it.label) for it in items] == [
        ("n01440764_a.png", 0),
        ("n01443537_b.png", 1),
        ("n01484850_c.png", 2),
    ]


def test_load_dataset_synset_folder(tmp_path):
    folder, words = make_synset_folder(tmp_path)
    items = load_dataset(folder, synset_words=words)
    assert sorted(it.label for it in items) == [0, 1, 2]


def test_load_dataset_plain_folder_labels_minus_one(tmp_path):
    folder, _ = make_synset_folder(tmp_path)
    write(folder / "kitten.png", rng_image(5, 5))
    items = load_dataset(folder)
    assert len(items) == 4
    assert {it.label for it in items} == {-1}
    assert all(it.path.is_file() for it in items)


def test_load_dataset_empty_folder_is_a_data_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        load_dataset(empty)


def test_load_dataset_empty_folder_with_synset_words_is_a_data_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    words = tmp_path / "synset_words.txt"
    words.write_text(SYNSET_WORDS, encoding="utf-8")
    with pytest.raises(DataError, match="no images"):
        load_dataset(empty, synset_words=words)


def test_load_dataset_nonexistent_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does_not_exist"):
        load_dataset(tmp_path / "does_not_exist")


def test_load_dataset_non_csv_file_is_a_data_error(tmp_path):
    p = write(tmp_path / "single.png", rng_image(5, 5))
    with pytest.raises(DataError, match="single.png"):
        load_dataset(p)


# ---------------------------------------------------------------- split


def synthetic(n: int, prefix: str = "img") -> list[LabelledImage]:
    return [LabelledImage(Path("/nonexistent") / f"{prefix}_{i:05d}.JPEG", i % 1000) for i in range(n)]


def names(items) -> list[str]:
    return [it.path.name for it in items]


def test_split_is_deterministic_and_order_independent():
    items = synthetic(500)
    c1, e1 = split_calibration(items)
    c2, e2 = split_calibration(items)
    assert c1 == c2 and e1 == e2
    shuffled = list(items)
    random.Random(1234).shuffle(shuffled)
    assert shuffled != items
    c3, e3 = split_calibration(shuffled)
    assert set(names(c3)) == set(names(c1))
    assert set(names(e3)) == set(names(e1))


def test_split_is_disjoint_and_covers_the_input():
    items = synthetic(1000)
    calib, evals = split_calibration(items)
    assert calib and evals
    assert not set(names(calib)) & set(names(evals))
    assert sorted(names(calib) + names(evals)) == sorted(names(items))
    assert len(calib) + len(evals) == len(items)


@pytest.mark.parametrize("fraction", [1 / 3, 0.1, 0.5, 0.9])
def test_split_fraction_roughly_holds(fraction):
    items = synthetic(3000)
    kw = {} if fraction == 1 / 3 else {"calibration_fraction": fraction}
    calib, _ = split_calibration(items, **kw)
    assert abs(len(calib) / len(items) - fraction) <= 0.03


def test_split_depends_on_the_name_not_the_folder():
    a = [LabelledImage(Path("/x") / n, 0) for n in names(synthetic(300))]
    b = [LabelledImage(Path("/elsewhere/deeper") / n, 5) for n in names(synthetic(300))]
    assert names(split_calibration(a)[0]) == names(split_calibration(b)[0])


def test_adding_unrelated_files_does_not_move_existing_ones():
    base = synthetic(800)
    calib, evals = split_calibration(base)
    grown = base + synthetic(700, prefix="other")
    random.Random(7).shuffle(grown)
    calib2, evals2 = split_calibration(grown)
    base_names = set(names(base))
    assert {n for n in names(calib2) if n in base_names} == set(names(calib))
    assert {n for n in names(evals2) if n in base_names} == set(names(evals))


def test_larger_fraction_only_adds_to_calibration():
    items = synthetic(1000)
    small, _ = split_calibration(items, calibration_fraction=0.2)
    large, _ = split_calibration(items, calibration_fraction=0.4)
    assert set(names(small)) < set(names(large))


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5])
def test_bad_fraction_is_a_data_error(fraction):
    with pytest.raises(DataError, match="calibration_fraction"):
        split_calibration(synthetic(10), calibration_fraction=fraction)


def test_split_of_empty_list_is_empty():
    assert split_calibration([]) == ([], [])


@pytest.mark.shared
def test_real_sample_splits_194_406(shared):
    items = read_labels_csv(shared / "imagenet" / "sample_labels.csv")
    assert len(items) == 600
    calib, evals = split_calibration(items)
    assert (len(calib), len(evals)) == (194, 406)
    assert not {it.path for it in calib} & {it.path for it in evals}
    assert not set(names(calib)) & set(names(evals))
    assert {it.path for it in calib} | {it.path for it in evals} == {it.path for it in items}


def test_torchvision_resize_refuses_an_extreme_aspect_ratio_instead_of_a_huge_resize():
    thin = np.zeros((1, 10000, 3), np.uint8)
    with pytest.raises(DataError, match=r"10000x1 pixels: aspect ratio above 16:1.*crop it"):
        to_uint8_input(thin, TORCHVISION_PREPROCESS)
    with pytest.raises(DataError, match="aspect ratio"):
        to_uint8_input(np.zeros((170, 10, 3), np.uint8), TORCHVISION_PREPROCESS)
    ok = to_uint8_input(np.zeros((16, 256, 3), np.uint8), TORCHVISION_PREPROCESS)  # exactly 16:1
    assert ok.shape == (224, 224, 3)
    # the Caffe style resizes to a fixed size whatever the shape: a thin frame is fine there
    assert to_uint8_input(thin, CAFFE_PREPROCESS).shape == (227, 227, 3)


def test_load_pixels_stacks_the_files_as_the_models_take_them(tmp_path):
    paths = []
    for k, (h, w) in enumerate(((300, 400), (256, 256))):
        p = tmp_path / f"im{k}.png"
        cv2.imwrite(str(p), rng_image(h, w, seed=20 + k))
        paths.append(p)
    got = load_pixels([LabelledImage(paths[0], 3), paths[1]], CAFFE_PREPROCESS)
    assert got.shape == (2, 227, 227, 3) and got.dtype == np.uint8
    for row, p in zip(got, paths):
        np.testing.assert_array_equal(row, to_uint8_input(load_image(p), CAFFE_PREPROCESS))
