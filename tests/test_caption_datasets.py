"""`load_caption_dataset` on small fixtures written in each format's exact layout, bad data and fatal errors."""

import csv
import json
import logging
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from vitgpt2_caption.caption_datasets import PROBLEM_KINDS, detect_format, load_caption_dataset


# --------------------------------------------------------------------------------------------------
# Fixture helpers: image `i` is an 8x8 block of a colour unique to `i`, so a loaded image can be traced back.
# --------------------------------------------------------------------------------------------------

NUM_COLOURS = 64


def _colour(index):
    return ((53 * index) % 256, (97 * index + 40) % 256, (151 * index + 80) % 256)


def _write_image(path, index):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), _colour(index)).save(path)


def _image_index(image):
    pixel = np.asarray(image.convert("RGB"), dtype=float)[4, 4]
    distances = [np.linalg.norm(pixel - np.array(_colour(index))) for index in range(NUM_COLOURS)]
    return int(np.argmin(distances))


def _loaded_rows(dataset_dict):
    """{split: {image_id: (captions, image index)}}, after checking the common schema."""
    assert list(dataset_dict) == ["train", "validation", "test"]
    rows = {}
    for split, dataset in dataset_dict.items():
        assert isinstance(dataset.features["image"], datasets.Image)
        rows[split] = {row["image_id"]: (row["captions"], _image_index(row["image"])) for row in dataset}
        assert len(rows[split]) == dataset.num_rows  # one row per image
    return rows


def _assert_disjoint_splits(dataset_dict):
    paths = {
        split: {image["path"] for image in ds.cast_column("image", datasets.Image(decode=False))["image"]}
        for split, ds in dataset_dict.items()
    }
    ids = {split: set(ds["image_id"]) for split, ds in dataset_dict.items()}
    for first, second in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not paths[first] & paths[second]
        assert not ids[first] & ids[second]


def _write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def _write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(data, handle)


# --------------------------------------------------------------------------------------------------
# Each format gives back exactly the fixture's rows
# --------------------------------------------------------------------------------------------------


def test_imagefolder_jsonl_captions_lists_in_split_subfolders(tmp_path):
    layout = {"train": {"a": 0, "b": 1, "c": 2}, "validation": {"d": 3}, "test": {"e": 4}}
    expected = {}
    for split, images in layout.items():
        rows = []
        for name, index in images.items():
            _write_image(tmp_path / split / f"{name}.png", index)
            rows.append(
                {"file_name": f"{name}.png", "captions": [f"caption {k} of {name}" for k in range(index % 3 + 1)]}
            )
        _write_jsonl(tmp_path / split / "metadata.jsonl", rows)
        expected[split] = {
            f"{split}/{row['file_name'][:-4]}": (row["captions"], images[row["file_name"][:-4]]) for row in rows
        }

    assert detect_format(str(tmp_path)) == "imagefolder"
    loaded, report = load_caption_dataset(str(tmp_path), return_report=True)
    assert _loaded_rows(loaded) == expected
    assert not report.problems
    _assert_disjoint_splits(loaded)


def test_imagefolder_csv_one_caption_per_row_with_split_column(tmp_path):
    rows = [  # rows of one image are not adjacent: grouping must not rely on order
        ("images/a.jpg", "a cat on a mat", "train", 0),
        ("images/b.jpg", "a dog", "val", 1),
        ("images/a.jpg", "a cat sitting", "train", 0),
        ("images/c.jpg", "a bird", "test", 2),
        ("images/d.jpg", "a fish", "train", 3),
        ("images/b.jpg", "a brown dog", "val", 1),
    ]
    for file_name, _, _, index in rows:
        _write_image(tmp_path / file_name, index)
    with open(tmp_path / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption", "split"])
        writer.writerows(row[:3] for row in rows)

    loaded = load_caption_dataset(str(tmp_path))
    assert _loaded_rows(loaded) == {
        "train": {"images/a": (["a cat on a mat", "a cat sitting"], 0), "images/d": (["a fish"], 3)},
        "validation": {"images/b": (["a dog", "a brown dog"], 1)},
        "test": {"images/c": (["a bird"], 2)},
    }


def test_imagefolder_without_split_is_split_by_image_with_a_seed(tmp_path):
    rows = []
    for index in range(20):
        _write_image(tmp_path / f"{index:02d}.png", index)
        rows += [
            {"file_name": f"{index:02d}.png", "caption": f"image {index} caption {k}", "image_id": f"id{index}"}
            for k in range(3)
        ]
    _write_jsonl(tmp_path / "metadata.jsonl", rows)

    def load(seed):
        return load_caption_dataset(str(tmp_path), seed=seed, validation_fraction=0.1, test_fraction=0.2)

    loaded = load(seed=1)
    splits = _loaded_rows(loaded)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 14, "validation": 2, "test": 4}
    merged = {image_id: row for split_rows in splits.values() for image_id, row in split_rows.items()}
    assert merged == {f"id{i}": ([f"image {i} caption {k}" for k in range(3)], i) for i in range(20)}
    _assert_disjoint_splits(loaded)
    assert _loaded_rows(load(seed=1)) == splits
    assert _loaded_rows(load(seed=2))["test"].keys() != splits["test"].keys()


def test_mini_coco(tmp_path):
    image_ids = [9, 25, 30, 34, 36, 42, 49, 61, 64, 71]
    records = []
    for index, image_id in enumerate(image_ids):
        _write_image(tmp_path / "Images" / f"COCO_train2014_{image_id:012d}.jpg", index)
        records += [{"image_id": image_id, "caption": f"photo {image_id} number {k}"} for k in range(index % 4 + 2)]
    records.reverse()  # any record order
    _write_json(tmp_path / "captions.json", records)

    assert detect_format(str(tmp_path)) == "mini_coco"
    loaded = load_caption_dataset(str(tmp_path), validation_fraction=0.2, test_fraction=0.1)
    splits = _loaded_rows(loaded)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 7, "validation": 2, "test": 1}
    merged = {image_id: row for split_rows in splits.values() for image_id, row in split_rows.items()}
    expected = {}
    for index, image_id in enumerate(image_ids):
        expected[str(image_id)] = ([f"photo {image_id} number {k}" for k in reversed(range(index % 4 + 2))], index)
    assert merged == expected
    _assert_disjoint_splits(loaded)


def _coco_fixture(root):
    """annotations/captions_{train,val}2014.json + train2014/ and val2014/ images; returns the expected rows."""
    expected = {"train": {}, "validation": {}}
    for subset, split, ids in (("train2014", "train", range(1, 9)), ("val2014", "validation", range(20, 23))):
        images, annotations = [], []
        for image_id in ids:
            file_name = f"COCO_{subset}_{image_id:012d}.jpg"
            _write_image(root / subset / file_name, image_id)
            images.append({"id": image_id, "file_name": file_name, "height": 8, "width": 8})
            annotations += [
                {"id": 10 * image_id + k, "image_id": image_id, "caption": f"{subset} image {image_id} ref {k}"}
                for k in range(5)
            ]
        annotations.sort(key=lambda annotation: annotation["id"] % 7)  # COCO does not group by image
        for image_id in ids:  # captions are grouped in annotation order
            captions = [annotation["caption"] for annotation in annotations if annotation["image_id"] == image_id]
            expected[split][str(image_id)] = (captions, image_id)
        _write_json(
            root / "annotations" / f"captions_{subset}.json",
            {"info": {}, "images": images, "annotations": annotations},
        )
    return expected


def test_coco(tmp_path):
    expected = _coco_fixture(tmp_path)
    assert detect_format(str(tmp_path)) == "coco"
    loaded = load_caption_dataset(str(tmp_path), test_fraction=0.25)
    splits = _loaded_rows(loaded)
    # validation comes from val2014; the missing test split is carved out of train2014, by image.
    assert splits["validation"] == expected["validation"]
    assert len(splits["test"]) == 2 and len(splits["train"]) == 6
    assert {**splits["train"], **splits["test"]} == expected["train"]
    _assert_disjoint_splits(loaded)


def test_coco_single_annotation_file_with_image_dir(tmp_path):
    expected = _coco_fixture(tmp_path)
    loaded = load_caption_dataset(
        str(tmp_path / "annotations" / "captions_val2014.json"),
        image_dir=str(tmp_path),
        validation_fraction=0.3,
        test_fraction=0.3,
    )
    merged = {image_id: row for split_rows in _loaded_rows(loaded).values() for image_id, row in split_rows.items()}
    assert merged == expected["validation"]


def test_karpathy_restval_joins_train(tmp_path):
    split_of = {1: "train", 2: "train", 3: "restval", 4: "restval", 5: "val", 6: "test", 7: "test"}
    images = []
    for cocoid, split in split_of.items():
        folder = "train2014" if split == "train" else "val2014"
        filename = f"COCO_{folder}_{cocoid:012d}.jpg"
        _write_image(tmp_path / "coco_images" / folder / filename, cocoid)
        sentences = [
            {"tokens": ["x"], "raw": f"Image {cocoid} sentence {k}.", "imgid": cocoid, "sentid": k} for k in range(5)
        ]
        images.append(
            {
                "filepath": folder,
                "filename": filename,
                "imgid": cocoid - 1,
                "cocoid": cocoid,
                "split": split,
                "sentences": sentences,
                "sentids": list(range(5)),
            }
        )
    _write_json(tmp_path / "dataset_coco.json", {"images": images, "dataset": "coco"})

    assert detect_format(str(tmp_path)) == "karpathy"
    loaded = load_caption_dataset(str(tmp_path), image_dir=str(tmp_path / "coco_images"))
    want = {"train": [1, 2, 3, 4], "validation": [5], "test": [6, 7]}
    assert _loaded_rows(loaded) == {
        split: {str(i): ([f"Image {i} sentence {k}." for k in range(5)], i) for i in ids}
        for split, ids in want.items()
    }


# --------------------------------------------------------------------------------------------------
# Bad data: counted by kind, reported with examples, the good rows still load
# --------------------------------------------------------------------------------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_bad_imagefolder_rows_are_counted_reported_and_skipped(tmp_path, caplog):
    for name, index in (("a.png", 0), ("b.jpg", 1), ("c.png", 2), ("d.png", 3), ("orphan.png", 5), ("held.png", 6)):
        _write_image(tmp_path / name, index)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noise.save(tmp_path / "trunc.jpg")
    noise.save(tmp_path / "trunc.png")
    _truncate(tmp_path / "trunc.jpg")
    _truncate(tmp_path / "trunc.png")
    (tmp_path / "text.jpg").write_text("this is not an image")
    _write_jsonl(
        tmp_path / "metadata.jsonl",
        [
            {"file_name": "a.png", "captions": ["a good caption", ""]},  # one empty caption
            {"file_name": "b.jpg", "captions": [42, "another good caption"]},  # one non-text caption
            {"file_name": "c.png", "captions": ["a third good caption"]},
            {"file_name": "d.png", "captions": ["   "]},  # only an empty caption: an image without caption
            {"file_name": "gone.png", "captions": ["its file is missing"]},
            {"file_name": "trunc.jpg", "captions": ["a truncated jpeg"]},
            {"file_name": "trunc.png", "captions": ["a truncated png"]},
            {"file_name": "text.jpg", "captions": ["not an image"]},
            {"file_name": "held.png", "captions": ["odd split"], "split": "holdout"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="vitgpt2_caption.caption_datasets"):
        loaded, report = load_caption_dataset(
            str(tmp_path), validation_fraction=0.3, test_fraction=0.3, return_report=True
        )

    assert dict(report.problems) == {
        "empty_caption": 2,
        "non_text_caption": 1,
        "image_without_caption": 2,  # d.png (all captions bad) and orphan.png (not in the metadata)
        "missing_image": 1,
        "truncated_image": 2,
        "unreadable_image": 1,
        "unknown_split": 1,
    }
    assert set(report.problems) <= set(PROBLEM_KINDS)
    assert report.examples["missing_image"] == [str(tmp_path / "gone.png")]
    assert sorted(report.examples["truncated_image"]) == [str(tmp_path / "trunc.jpg"), str(tmp_path / "trunc.png")]
    assert report.examples["unreadable_image"] == [str(tmp_path / "text.jpg")]
    assert sorted(report.examples["image_without_caption"]) == [str(tmp_path / "d.png"), str(tmp_path / "orphan.png")]
    assert "metadata.jsonl:9" in report.examples["unknown_split"][0]
    assert report.num_rows == {"train": 1, "validation": 1, "test": 1}
    assert "gone.png" in caplog.text and "truncated_image" in caplog.text

    merged = {image_id: row for split_rows in _loaded_rows(loaded).values() for image_id, row in split_rows.items()}
    assert merged == {
        "a": (["a good caption"], 0),
        "b": (["another good caption"], 1),
        "c": (["a third good caption"], 2),
    }


def test_bad_coco_records_are_counted(tmp_path):
    for image_id in (1, 2, 3):
        _write_image(tmp_path / "train2014" / f"{image_id}.jpg", image_id)
    annotation = {
        "images": [
            {"id": 1, "file_name": "1.jpg"},
            {"id": 2, "file_name": "2.jpg"},
            {"id": 3, "file_name": "3.jpg"},  # no annotation
            {"id": 4, "file_name": "4.jpg"},  # no file
            {"id": 5},  # no file_name
        ],
        "annotations": [
            {"image_id": 1, "caption": "one"},
            {"image_id": 2, "caption": "two"},
            {"image_id": 4, "caption": "four"},
            {"image_id": 99, "caption": "an image that is not listed"},
            {"image_id": 1, "caption": None},
        ],
    }
    _write_json(tmp_path / "captions_train2014.json", annotation)
    loaded, report = load_caption_dataset(str(tmp_path), validation_fraction=0, test_fraction=0.5, return_report=True)
    assert dict(report.problems) == {
        "image_without_caption": 1,
        "missing_image": 1,
        "malformed_record": 1,
        "caption_without_image": 1,
        "non_text_caption": 1,
    }
    assert report.examples["missing_image"] == [str(tmp_path / "train2014" / "4.jpg")]
    assert sorted([*loaded["train"]["image_id"], *loaded["test"]["image_id"]]) == ["1", "2"]
    assert loaded["validation"].num_rows == 0


@pytest.mark.parametrize("verify_images, truncated_found", [("fast", 1), ("full", 1), ("off", 0)])
def test_image_verification_modes(tmp_path, verify_images, truncated_found):
    for index in range(4):
        _write_image(tmp_path / f"{index}.jpg", index)
    _truncate(tmp_path / "0.jpg")
    _write_jsonl(tmp_path / "metadata.jsonl", [{"file_name": f"{index}.jpg", "caption": "c"} for index in range(4)])
    _, report = load_caption_dataset(str(tmp_path), verify_images=verify_images, return_report=True, num_workers=2)
    assert report.problems["truncated_image"] == truncated_found


# --------------------------------------------------------------------------------------------------
# Fatal: fail at once, naming the file and what was expected
# --------------------------------------------------------------------------------------------------


def _fatal_cases(root):
    """(name, setup(root) -> load kwargs, error type, substring of the message)."""

    def metadata_without_file_name():
        _write_jsonl(root / "metadata.jsonl", [{"image": "a.png", "caption": "x"}])
        return {"source": str(root)}, ValueError, "metadata.jsonl:1"

    def csv_without_caption():
        (root / "metadata.csv").write_text("file_name,text\na.png,hello\n")
        return {"source": str(root)}, ValueError, "metadata.csv"

    def not_json_lines():
        (root / "metadata.jsonl").write_text('{"file_name": "a.png", "caption": "x"}\nnot json\n')
        return {"source": str(root)}, ValueError, "metadata.jsonl:2"

    def mini_coco_dict():
        _write_json(root / "captions.json", {"image_id": 1, "caption": "x"})
        return {"source": str(root)}, ValueError, "captions.json"

    def mini_coco_missing():
        (root / "Images").mkdir()
        return {"source": str(root), "dataset_format": "mini_coco"}, FileNotFoundError, "captions.json"

    def coco_missing():
        return {"source": str(root), "dataset_format": "coco"}, FileNotFoundError, "captions_*.json"

    def coco_wrong_structure():
        _write_json(root / "captions_train2014.json", [{"image_id": 1, "caption": "x"}])
        return {"source": str(root)}, ValueError, "captions_train2014.json"

    def karpathy_not_json():
        (root / "dataset_coco.json").write_text("{truncated")
        return {"source": str(root)}, ValueError, "dataset_coco.json"

    def no_usable_rows():
        _write_jsonl(root / "metadata.jsonl", [{"file_name": "gone.png", "caption": "x"}])
        return {"source": str(root)}, ValueError, "metadata.jsonl"

    def missing_source():
        return {"source": str(root / "nowhere")}, FileNotFoundError, "nowhere"

    def unknown_layout():
        (root / "notes.txt").write_text("hi")
        return {"source": str(root)}, ValueError, "Cannot tell the format"

    return {case.__name__: case for case in locals().values() if callable(case)}


@pytest.mark.parametrize(
    "case",
    [
        "metadata_without_file_name",
        "csv_without_caption",
        "not_json_lines",
        "mini_coco_dict",
        "mini_coco_missing",
        "coco_missing",
        "coco_wrong_structure",
        "karpathy_not_json",
        "no_usable_rows",
        "missing_source",
        "unknown_layout",
    ],
)
def test_fatal_sources_fail_at_once_naming_the_file(tmp_path, case):
    kwargs, error, message = _fatal_cases(tmp_path)[case]()
    with pytest.raises(error, match=message.replace("*", r"\*").replace(".", r"\.")):
        load_caption_dataset(**kwargs)


def test_hub_datasets_are_normalised(tmp_path, monkeypatch):
    # The real call needs the network; this checks what the loader does with what `load_dataset` returns.
    for index in range(10):
        _write_image(tmp_path / f"{index}.png", index)
    features = datasets.Features(
        {"img": datasets.Image(), "caption": datasets.Value("string"), "cocoid": datasets.Value("int64")}
    )
    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {
                    "img": [str(tmp_path / f"{i}.png") for i in range(8)],
                    "caption": [f"c{i}" for i in range(7)] + [" "],
                    "cocoid": list(range(8)),
                },
                features=features,
            ),
            "val": datasets.Dataset.from_dict(
                {"img": [str(tmp_path / f"{i}.png") for i in (8, 9)], "caption": ["c8", "c9"], "cocoid": [8, 9]},
                features=features,
            ),
        }
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kwargs: hub)
    assert detect_format("someone/captions") == "hub"
    loaded, report = load_caption_dataset("someone/captions", test_fraction=0.3, return_report=True)
    assert dict(report.problems) == {"image_without_caption": 1}
    rows = _loaded_rows(loaded)
    assert rows["validation"] == {"8": (["c8"], 8), "9": (["c9"], 9)}
    assert {**rows["train"], **rows["test"]} == {str(i): ([f"c{i}"], i) for i in range(7)}
    _assert_disjoint_splits(loaded)


def test_hub_rows_of_one_image_become_one_row_and_never_cross_splits(tmp_path, monkeypatch):
    # Datasets such as COCO-style caption tables hold one caption per row; carving by row would put captions of
    # one image in train and test.
    for index in range(6):
        _write_image(tmp_path / f"{index}.png", index)
    rows = [(i, f"image {i} caption {k}") for i in range(6) for k in range(3)]
    features = datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "image_id": datasets.Value("int64")}
    )
    train = datasets.Dataset.from_dict(
        {
            "image": [str(tmp_path / f"{i}.png") for i, _ in rows],
            "caption": [caption for _, caption in rows],
            "image_id": [i for i, _ in rows],
        },
        features=features,
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kwargs: datasets.DatasetDict({"train": train}))
    loaded = load_caption_dataset("someone/coco-rows", validation_fraction=0.34, test_fraction=0.34)
    seen = {}
    for split in ("train", "validation", "test"):
        for row in loaded[split]:
            assert row["image_id"] not in seen, f"image {row['image_id']} is in {seen.get(row['image_id'])} and {split}"
            seen[row["image_id"]] = split
            assert row["captions"] == [f"image {row['image_id']} caption {k}" for k in range(3)]
    assert sorted(seen) == [str(i) for i in range(6)]
    assert all(len(loaded[split]) >= 1 for split in ("validation", "test"))
