"""The synthetic captioning dataset: determinism, caption truth, richness, imagefolder round trip."""

import re
from collections import Counter

import numpy as np
import pytest

from vitgpt2_caption.caption_datasets import load_caption_dataset
from vitgpt2_caption.synthetic import (
    COLOURS,
    MIN_CAPTIONS,
    POSITIONS,
    SHAPES,
    SPLITS,
    caption_names_objects,
    generate_synthetic_dataset,
    make_sample,
    parse_caption_objects,
    write_synthetic_imagefolder,
)


SMALL = {"num_train": 24, "num_validation": 6, "num_test": 6}


def _rows(dataset_dict):
    return {
        split: [(row["image_id"], row["captions"], row["objects"], np.asarray(row["image"])) for row in dataset]
        for split, dataset in dataset_dict.items()
    }


def _assert_same_rows(left, right):
    assert left.keys() == right.keys()
    for split in left:
        assert len(left[split]) == len(right[split])
        for (id_a, captions_a, objects_a, pixels_a), (id_b, captions_b, objects_b, pixels_b) in zip(
            left[split], right[split]
        ):
            assert (id_a, captions_a, objects_a) == (id_b, captions_b, objects_b)
            np.testing.assert_array_equal(pixels_a, pixels_b)


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = _rows(generate_synthetic_dataset(seed=3, **SMALL))
    _assert_same_rows(first, _rows(generate_synthetic_dataset(seed=3, **SMALL)))
    other = _rows(generate_synthetic_dataset(seed=4, **SMALL))
    differing = sum(a[1] != b[1] for a, b in zip(first["train"], other["train"]))
    assert differing > SMALL["num_train"] * 0.8


def test_splits_have_the_requested_sizes_and_share_no_image():
    dataset = generate_synthetic_dataset(seed=0, **SMALL)
    assert {split: dataset[split].num_rows for split in SPLITS} == {"train": 24, "validation": 6, "test": 6}
    ids = [set(dataset[split]["image_id"]) for split in SPLITS]
    assert sum(map(len, ids)) == len(set.union(*ids)) == 36
    pixels = {np.asarray(image).tobytes() for split in SPLITS for image in dataset[split]["image"]}
    assert len(pixels) == 36


def test_every_caption_names_exactly_the_drawn_objects():
    colour_or_shape = "|".join(list(COLOURS) + list(SHAPES))
    for index in range(200):
        sample = make_sample(seed=7, split="train", index=index)
        objects = sample["objects"]
        assert 1 <= len(objects) <= 3
        assert len(set(sample["captions"])) == len(sample["captions"]) >= MIN_CAPTIONS
        expected = Counter((obj["colour"], obj["shape"]) for obj in objects)
        for caption in sample["captions"]:
            assert caption_names_objects(caption, objects), caption
            # Independent of the checker: every "<colour> <shape>" bigram, and no colour or shape word elsewhere.
            pairs = Counter(re.findall(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b", caption))
            assert pairs == expected, caption
            assert len(re.findall(rf"\b({colour_or_shape})\b", caption)) == 2 * len(objects), caption


def test_objects_are_drawn_where_and_in_the_colour_the_captions_say():
    palette = np.array(list(COLOURS.values()), dtype=float)
    names = list(COLOURS)
    for index in range(100):
        sample = make_sample(seed=11, split="validation", index=index, image_size=96)
        pixels = np.asarray(sample["image"], dtype=float)  # (H, W, 3)
        for obj in sample["objects"]:
            x, y = (int(fraction * 96) for fraction in POSITIONS[obj["position"]])
            nearest = names[int(np.argmin(np.linalg.norm(palette - pixels[y, x], axis=1)))]
            assert nearest == obj["colour"], (index, obj)
        # Backgrounds are neutral (grey levels): never the colour of an object.
        corner = pixels[:4, :4].reshape(-1, 3)
        assert np.ptp(corner, axis=1).max() < 30, index


def test_rich_enough_that_no_caption_fits_most_images():
    layouts = Counter()
    for index in range(500):
        objects = make_sample(seed=0, split="train", index=index, image_size=16)["objects"]
        layouts[frozenset((obj["colour"], obj["shape"]) for obj in objects)] += 1
    # Even the most frequent object set (a single object: 1 in 3 images x 1 of 35 colour-shapes) is
    # under 5% of images, so no caption is right for most of them.
    assert layouts.most_common(1)[0][1] < 25
    assert len(layouts) > 300


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red circle and a blue square on a grey background", True),
        ("a small red circle to the left of a large blue square", True),
        ("A Blue Square, a red circle.", True),
        ("a red circle on a gray gradient background", False),  # the blue square is missing
        ("a red circle, a blue square and a green star", False),  # an extra object
        ("a red circle and a green square", False),  # a wrong colour
        ("a red star and a blue square", False),  # a wrong shape
        ("two red circles and a blue square", False),  # one red circle too many
        ("a black circle and a blue square", False),  # a colour that is not an object colour
        ("a red and blue square and a circle", False),  # colours that do not pair with shapes
        ("", False),
    ],
)
def test_caption_checker(caption, expected):
    objects = [{"shape": "circle", "colour": "red"}, {"shape": "square", "colour": "blue"}]
    assert caption_names_objects(caption, objects) is expected


def test_checker_counts_plurals():
    assert parse_caption_objects("two green stars above a pink diamond") == Counter(
        {("green", "star"): 2, ("pink", "diamond"): 1}
    )


def test_written_imagefolder_loads_back_with_the_same_rows(tmp_path):
    import datasets

    write_synthetic_imagefolder(str(tmp_path / "synthetic"), seed=5, image_size=32, **SMALL)
    expected = _rows(generate_synthetic_dataset(seed=5, image_size=32, **SMALL))
    _assert_same_rows(_rows(load_caption_dataset(str(tmp_path / "synthetic"))), expected)
    # Plain `datasets` reads the folder too (its split subfolders and metadata.jsonl).
    plain = datasets.load_dataset(
        "imagefolder", data_dir=str(tmp_path / "synthetic"), cache_dir=str(tmp_path / "cache")
    )
    assert {split: plain[split].num_rows for split in plain} == {"train": 24, "validation": 6, "test": 6}
    assert sorted(plain["train"]["image_id"]) == sorted(row[0] for row in expected["train"])


def test_loader_builds_the_synthetic_default():
    loaded = load_caption_dataset("synthetic", seed=9, synthetic_kwargs={**SMALL, "image_size": 24})
    _assert_same_rows(_rows(loaded), _rows(generate_synthetic_dataset(seed=9, image_size=24, **SMALL)))
    assert loaded["train"][0]["image"].size == (24, 24)
