"""The synthetic captioning dataset: the project's default data, generated on the fly, no download.

Each image holds one to three objects (5 shapes x 7 colours x 2 sizes, at distinct positions) on a
plain, gradient or noisy neutral background, with at least five paraphrased plain-English captions.
More than 160k object layouts exist before sizes, backgrounds and jitter, so no caption fits most
images: a model has to look at the picture. The ground-truth objects are kept per row, and
`caption_names_objects` checks a caption against them (used to score generated captions).

Determinism: image `i` of split `s` is drawn from `numpy.random.default_rng([seed, s, i])`, so a row does
not depend on how many rows are generated, and splits never share a random stream.
"""

import json
import os
import re
from collections import Counter
from typing import Any, Optional, Sequence

import datasets
import numpy as np
from PIL import Image, ImageDraw


SHAPES = ("circle", "square", "triangle", "star", "diamond")
# Saturated, mutually distinct colours. Backgrounds are neutral (grey/white/black) so an object is never
# drawn in its background's colour.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "pink": (250, 120, 200),
}
SIZES = {"small": 0.09, "large": 0.17}  # radius as a fraction of the image side
# Slot centres as (x, y) fractions. "centre" is only used alone: a large centre object would touch the others.
POSITIONS = {
    "left": (0.22, 0.5),
    "right": (0.78, 0.5),
    "top": (0.5, 0.22),
    "bottom": (0.5, 0.78),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
BACKGROUND_COLOURS = {"grey": (128, 128, 128), "white": (235, 235, 235), "black": (25, 25, 25)}
BACKGROUND_KINDS = ("plain", "gradient", "noisy")
SPLITS = ("train", "validation", "test")
MIN_CAPTIONS = 5
OBJECTS_FEATURE = datasets.List({key: datasets.Value("string") for key in ("shape", "colour", "size", "position")})

# Words the caption checker understands beyond SHAPES/COLOURS: other colour names (so that "a black
# circle" is read as a wrong object, not ignored), spelling variants and counts.
_OTHER_COLOURS = ("grey", "gray", "white", "black", "brown", "cyan", "violet", "magenta", "gold", "silver")
_SYNONYMS = {"gray": "grey", "rhombus": "diamond"}
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_SKIPPABLE = set(SIZES) | {"big", "little", "tiny", "huge", "bright", "dark", "light"}
_BACKGROUND_WORDS = {"background", "backdrop", "gradient", "noise", "noisy", "speckled", "canvas"}


def generate_synthetic_dataset(
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 200,
    seed: int = 42,
    image_size: int = 64,
) -> datasets.DatasetDict:
    """Generate the synthetic captioning splits in memory.

    Rows: `image` (PIL, RGB, `image_size` square), `captions` (>= 5 str), `image_id` (str) and `objects`
    (list of `{"shape", "colour", "size", "position"}`).
    """
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "image_id": datasets.Value("string"),
            "objects": OBJECTS_FEATURE,
        }
    )
    splits = {}
    for split, num_rows in zip(SPLITS, (num_train, num_validation, num_test)):
        samples = [make_sample(seed, split, index, image_size) for index in range(num_rows)]
        columns = {key: [sample[key] for sample in samples] for key in features}
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)


def write_synthetic_imagefolder(
    out_dir: str,
    num_train: int = 2000,
    num_validation: int = 200,
    num_test: int = 200,
    seed: int = 42,
    image_size: int = 64,
) -> str:
    """Write the synthetic splits as an imagefolder: `out_dir/<split>/<image_id>.png` + `metadata.jsonl`.

    Each metadata line holds `file_name`, `captions` (list), `image_id` and `objects`; the folder loads with
    `load_caption_dataset(out_dir)` and with `datasets.load_dataset("imagefolder", data_dir=out_dir)`.
    """
    for split, num_rows in zip(SPLITS, (num_train, num_validation, num_test)):
        split_dir = os.path.join(out_dir, split)
        os.makedirs(split_dir, exist_ok=True)
        with open(os.path.join(split_dir, "metadata.jsonl"), "w", encoding="utf-8") as metadata:
            for index in range(num_rows):
                sample = make_sample(seed, split, index, image_size)
                file_name = f"{sample['image_id']}.png"
                sample.pop("image").save(os.path.join(split_dir, file_name))
                metadata.write(json.dumps({"file_name": file_name, **sample}) + "\n")
    return out_dir


def make_sample(seed: int, split: str, index: int, image_size: int = 64) -> dict[str, Any]:
    """One synthetic row, a pure function of (seed, split, index, image_size)."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    objects = _sample_objects(rng)
    background = _sample_background(rng)
    image = _render(rng, objects, background, image_size)
    return {
        "image": image,
        "captions": make_captions(objects, background),
        "image_id": f"synthetic-{seed}-{split}-{index:06d}",
        "objects": objects,
    }


def _sample_objects(rng: np.random.Generator) -> list[dict[str, str]]:
    num_objects = int(rng.integers(1, 4))
    positions = list(POSITIONS) if num_objects == 1 else [p for p in POSITIONS if p != "centre"]
    chosen_positions = rng.choice(positions, size=num_objects, replace=False)
    # Distinct (colour, shape) pairs: captions never need counting ("two red circles").
    kinds = rng.choice(len(COLOURS) * len(SHAPES), size=num_objects, replace=False)
    colours = list(COLOURS)
    return [
        {
            "shape": SHAPES[kind % len(SHAPES)],
            "colour": colours[kind // len(SHAPES)],
            "size": str(rng.choice(list(SIZES))),
            "position": str(position),
        }
        for kind, position in zip(kinds, chosen_positions)
    ]


def _sample_background(rng: np.random.Generator) -> dict[str, str]:
    return {"kind": str(rng.choice(BACKGROUND_KINDS)), "colour": str(rng.choice(list(BACKGROUND_COLOURS)))}


def _render(rng: np.random.Generator, objects: list[dict], background: dict, image_size: int) -> Image.Image:
    # Drawn at 4x and box-averaged down (supersampling): anti-aliased edges, so small stars and triangles stay
    # recognisable at 64 px. `reduce` is a plain 4 x 4 mean, several times faster than a LANCZOS resize.
    scale = 4
    side = image_size * scale
    # The background is flat at the pixel scale: built at the output size and repeated 4 x 4 (cheap), so the
    # box average gives it back exactly wherever no object covers it.
    canvas = Image.fromarray(_background_pixels(rng, background, image_size)).resize((side, side), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        centre_x, centre_y = POSITIONS[obj["position"]]
        jitter = rng.uniform(-0.03, 0.03, size=2)
        radius = SIZES[obj["size"]] * rng.uniform(0.9, 1.1) * side
        centre = ((centre_x + jitter[0]) * side, (centre_y + jitter[1]) * side)
        _draw_shape(draw, obj["shape"], centre, radius, COLOURS[obj["colour"]])
    return canvas.reduce(scale)


def _background_pixels(rng: np.random.Generator, background: dict, size: int) -> np.ndarray:
    """The (size, size, 3) uint8 background at the final resolution: a neutral colour plus a grey-level offset."""
    offset = np.zeros((size, size), dtype=np.float32)
    if background["kind"] == "gradient":
        # A +-40 brightness ramp along a random direction; neutral, so it never matches an object colour.
        angle = rng.uniform(0, 2 * np.pi)
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        offset += np.float32(np.cos(angle) * 80) * coords[None, :] + np.float32(np.sin(angle) * 80) * coords[:, None]
    elif background["kind"] == "noisy":
        # Grey-level noise, one value per output pixel.
        offset += rng.normal(0, 25, size=(size, size)).astype(np.float32)
    base = np.array(BACKGROUND_COLOURS[background["colour"]], dtype=np.float32)
    return np.clip(base + offset[..., None], 0, 255).astype(np.uint8)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple, radius: float, fill: tuple) -> None:
    x, y = centre
    if shape == "circle":
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    elif shape == "square":
        half = radius * 0.85  # same visual area as the circle, roughly
        draw.rectangle((x - half, y - half, x + half, y + half), fill=fill)
    else:
        draw.polygon(_polygon(shape, x, y, radius), fill=fill)


def _polygon(shape: str, x: float, y: float, radius: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), [radius] * 3
    elif shape == "diamond":
        angles, radii = np.deg2rad([-90, 0, 90, 180]), [radius, radius * 0.7, radius, radius * 0.7]
    elif shape == "star":
        angles = np.deg2rad(np.arange(10) * 36 - 90)
        radii = [radius if i % 2 == 0 else radius * 0.45 for i in range(10)]
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")
    return [(x + r * np.cos(a), y + r * np.sin(a)) for a, r in zip(angles, radii)]


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def make_captions(objects: Sequence[dict], background: dict) -> list[str]:
    """At least five distinct paraphrases, each naming every object's colour and shape exactly once."""
    plain = [_noun_phrase(obj) for obj in objects]
    sized = [_noun_phrase(obj, with_size=True) for obj in objects]
    placed = [f"{phrase} {POSITION_PHRASES[obj['position']]}" for phrase, obj in zip(sized, objects)]
    background_phrase = _background_phrase(background)
    captions = [
        f"{_join(plain)} on {background_phrase}",
        f"there is {_join(placed)}",
        f"a picture of {_join(plain[::-1])}",
        f"{_join(sized)} on {background_phrase}",
        _relation_caption(objects, sized) or f"an image with {_join(placed[::-1])}",
        f"{background_phrase} with {_join(placed)}",
        f"an image of {_join(plain)}",
    ]
    unique = list(dict.fromkeys(captions))
    assert len(unique) >= MIN_CAPTIONS, unique  # guaranteed by construction; a template change must keep it
    return unique


def _noun_phrase(obj: dict, with_size: bool = False) -> str:
    words = [obj["size"]] if with_size else []
    words += [obj["colour"], obj["shape"]]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _background_phrase(background: dict) -> str:
    colour = background["colour"]
    if background["kind"] == "gradient":
        return f"a {colour} gradient background"
    if background["kind"] == "noisy":
        return f"a noisy {colour} background"
    return f"a {colour} background"


def _relation_caption(objects: Sequence[dict], sized: Sequence[str]) -> Optional[str]:
    """ "a small red circle to the left of a large blue square" when two objects face each other."""
    by_position = {obj["position"]: phrase for obj, phrase in zip(objects, sized)}
    for first, second, words in (("left", "right", "to the left of"), ("top", "bottom", "above")):
        if first in by_position and second in by_position:
            relation = f"{by_position.pop(first)} {words} {by_position.pop(second)}"
            others = list(by_position.values())
            return relation if not others else f"{relation}, and {_join(others)}"
    return None


# --------------------------------------------------------------------------------------------------
# Checking a caption against the drawn objects
# --------------------------------------------------------------------------------------------------


def parse_caption_objects(caption: str) -> Counter:
    """The objects a caption names, as a multiset of `(colour, shape)`.

    A shape word takes the colour right before it (size-like adjectives may sit in between) and the count
    word before that ("two red circles" -> 2 x ("red", "circle")). A shape without a colour counts as
    `(None, shape)`; a colour that neither precedes a shape nor describes the background counts as
    `(colour, None)`: both can never match the truth, which is what a strict checker wants.
    """
    tokens = [_normalise(word) for word in re.findall(r"[a-z]+", caption.lower())]
    colours = set(COLOURS) | {_normalise(c) for c in _OTHER_COLOURS}
    found: Counter = Counter()
    count, colour = 1, None
    for position, token in enumerate(tokens):
        if token in _COUNTS and colour is None:
            count = _COUNTS[token]
        elif token in colours:
            if colour is not None:  # two colours in a row: the first one describes nothing we can check
                found[(colour, None)] += 1
            colour = token
        elif token in SHAPES:
            found[(colour, token)] += count
            count, colour = 1, None
        elif token in _BACKGROUND_WORDS:
            colour, count = None, 1  # "a grey background", "a grey gradient background"
        elif token in _SKIPPABLE:
            continue
        else:
            if colour is not None and not _describes_background(tokens, position):
                found[(colour, None)] += 1
            count, colour = 1, None
    if colour is not None:
        found[(colour, None)] += 1
    return found


def caption_names_objects(caption: str, objects: Sequence[dict]) -> bool:
    """True iff the caption names exactly the drawn objects: each one's colour and shape, nothing extra.

    Sizes, positions and the background are not checked; the comparison is a multiset comparison, so a
    missing, duplicated, recoloured or invented object makes it False.
    """
    expected = Counter((obj["colour"], obj["shape"]) for obj in objects)
    return parse_caption_objects(caption) == expected


def fraction_naming_exact_objects(captions: Sequence[str], objects_per_image: Sequence[Sequence[dict]]) -> float:
    """The demo's quality figure: the fraction of captions for which `caption_names_objects` holds."""
    if len(captions) != len(objects_per_image) or not captions:
        raise ValueError(f"Need one object list per caption, got {len(captions)} captions and {len(objects_per_image)} lists.")
    return sum(caption_names_objects(c, o) for c, o in zip(captions, objects_per_image)) / len(captions)


def _normalise(word: str) -> str:
    word = _SYNONYMS.get(word, word)
    # Plurals of our shape words: circles, squares, triangles, stars, diamonds.
    if word.endswith("s") and word[:-1] in SHAPES:
        word = word[:-1]
    return word


def _describes_background(tokens: Sequence[str], position: int) -> bool:
    # "a grey and noisy background": a background word shortly after the colour claims it.
    return any(token in _BACKGROUND_WORDS for token in tokens[position : position + 3])
