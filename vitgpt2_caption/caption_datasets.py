"""One loader for every caption source: `load_caption_dataset(source) -> DatasetDict`.

Every format becomes the same splits (`train`, `validation`, `test`) of one row per image:
`image` (a `datasets.Image()` feature: stored as a path, decoded to PIL on access, so a 100k-image
COCO costs no copy), `captions` (every reference, `list[str]`) and `image_id` (`str`), plus `objects`
for the synthetic data.

Formats (`dataset_format=`, detected from the folder when not given):

- `imagefolder`: images + `metadata.jsonl` or `metadata.csv` with `file_name` and either a `captions`
  list per image (a JSON list in CSV) or one `caption` per row (rows of the same image are grouped);
  optional `image_id` and `split` columns; the metadata may sit in split subfolders (`train/`,
  `validation/`, `val/`, `test/`) instead.
- `mini_coco`: `captions.json` (records with `image_id` and `caption`) beside
  `Images/COCO_train2014_<image_id:012d>.jpg`.
- `coco`: official annotations (`captions_train2014.json`: `images` with `id`/`file_name`,
  `annotations` with `image_id`/`caption`). `source` is the file or a folder holding `captions_*.json`
  (directly or in `annotations/`); the split comes from the file name. Images are looked up in
  `image_dir` (or beside the annotations), inside `<split folder>/` (e.g. `train2014/`) or directly.
- `karpathy`: `dataset_coco.json` (`images` with `filepath`, `filename`, `split`, `sentences[].raw`);
  images at `image_dir/filepath/filename` (`image_dir` defaults to the file's folder); `restval` joins train.
- `hub`: any other name is passed to `datasets.load_dataset(source, **hub_kwargs)`; the image column
  (the first `Image` feature) and the caption column (`captions`, `caption`, `sentences`, `text` or
  `raw`; a string or a list of strings) are found by name. Rows that share an id (`image_id`, `cocoid`,
  `imgid`, `id`, `filename` or `file_name`: one caption per row) are merged into one row per image, so a
  carved split never holds an image that train also holds. Without an id column every row is its own image.
  Loading by name needs the network; the offline tests feed the loader in-memory datasets.
- `synthetic`: `synthetic.generate_synthetic_dataset(seed=seed, **synthetic_kwargs)`.

Splits a source lacks are carved from train with a seeded permutation of images (never of captions, so
no image is in two splits). Bad data is counted, reported and skipped (see `PROBLEM_KINDS`); sources
that cannot be read at all raise at once, naming the file.
"""

import csv
import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import datasets
import numpy as np
from PIL import Image

from . import synthetic


logger = logging.getLogger(__name__)

DATASET_FORMATS = ("imagefolder", "mini_coco", "coco", "karpathy", "hub", "synthetic")
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "restval": "train",  # Karpathy's "rest of val2014": trained on, by convention
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
MINI_COCO_IMAGE_TEMPLATE = "COCO_train2014_{:012d}.jpg"
PROBLEM_KINDS = (
    "missing_image",  # the annotation names an image file that does not exist
    "unreadable_image",  # the file exists but is not an image PIL can open
    "truncated_image",  # the image file ends early (e.g. an interrupted download)
    "empty_caption",  # a caption that is "" or only whitespace
    "non_text_caption",  # a caption that is not a string (number, null, list, ...)
    "image_without_caption",  # an image with no usable caption (not in the annotations, or all bad)
    "caption_without_image",  # a caption whose image id is not among the annotation's images
    "unknown_split",  # a split name other than train/restval/val(idation)/dev/test
    "conflicting_split",  # captions of one image given in two splits (the first split is kept)
    "malformed_record",  # an annotation record without the fields its format requires
)
MAX_EXAMPLES = 5
_UNKNOWN_SPLIT = "<unknown>"


@dataclass
class LoadReport:
    """What `load_caption_dataset` read, and what it had to skip (counts by kind, a few examples each)."""

    source: str
    dataset_format: str
    problems: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=lambda: defaultdict(list))
    num_rows: dict = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        if kind not in PROBLEM_KINDS:
            raise ValueError(f"Unknown problem kind {kind!r}; expected one of {PROBLEM_KINDS}.")
        self.problems[kind] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(example)

    def __str__(self) -> str:
        rows = ", ".join(f"{split}={count}" for split, count in self.num_rows.items())
        lines = [f"Loaded {self.dataset_format} source {self.source!r}: {rows or 'no rows'}."]
        for kind, count in sorted(self.problems.items()):
            lines.append(f"  skipped {count} x {kind}, e.g. {', '.join(self.examples[kind])}")
        return "\n".join(lines)


@dataclass
class _Record:
    """One image and its captions, before validation."""

    image_path: str
    image_id: str
    split: Optional[str]
    captions: list = field(default_factory=list)
    objects: Optional[list] = None
    origin: str = ""  # where the record came from, for reports ("metadata.jsonl:12")


def load_caption_dataset(
    source: str = "synthetic",
    *,
    dataset_format: Optional[str] = None,
    image_dir: Optional[str] = None,
    seed: int = 42,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    synthetic_kwargs: Optional[dict] = None,
    hub_kwargs: Optional[dict] = None,
    verify_images: str = "fast",
    num_workers: Optional[int] = None,
    return_report: bool = False,
) -> Union[datasets.DatasetDict, tuple[datasets.DatasetDict, LoadReport]]:
    """Load a caption source as `train`/`validation`/`test` splits of `{image, captions, image_id}` rows.

    Args:
        source: a folder or annotation file, `"synthetic"`, or a Hub dataset name (see the module docstring).
        dataset_format: one of `DATASET_FORMATS`; detected from `source` when `None`.
        image_dir: where the images are, for `coco` and `karpathy` (and `mini_coco`, default `<source>/Images`).
        seed, validation_fraction, test_fraction: the seeded by-image split of the images of a source that
            lacks a split; the fractions are of the images the split is carved from.
        synthetic_kwargs: passed to `synthetic.generate_synthetic_dataset` (`seed` defaults to `seed`).
        hub_kwargs: passed to `datasets.load_dataset` for a Hub dataset.
        verify_images: `"fast"` opens each image's header and checks it is complete (JPEG end marker, PNG
            chunk checksums) without decoding pixels; `"full"` decodes every image; `"off"` only checks
            that files exist.
        num_workers: threads for the image checks (PIL releases the GIL while reading and decoding).
        return_report: also return the `LoadReport`.

    Raises:
        FileNotFoundError: `source` or its annotation file does not exist.
        ValueError: an annotation file is not in the expected format, or no usable row is left.
    """
    dataset_format = dataset_format or detect_format(source)
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(f"Unknown dataset_format {dataset_format!r}; expected one of {DATASET_FORMATS}.")
    if verify_images not in ("fast", "full", "off"):
        raise ValueError(f"verify_images must be 'fast', 'full' or 'off', got {verify_images!r}.")
    report = LoadReport(source=str(source), dataset_format=dataset_format)

    if dataset_format == "synthetic":
        dataset = synthetic.generate_synthetic_dataset(**{"seed": seed, **(synthetic_kwargs or {})})
    elif dataset_format == "hub":
        dataset = _load_hub(source, report, seed, validation_fraction, test_fraction, hub_kwargs or {})
    else:
        reader = {
            "imagefolder": _read_imagefolder,
            "mini_coco": _read_mini_coco,
            "coco": _read_coco,
            "karpathy": _read_karpathy,
        }
        records, annotation_file = reader[dataset_format](os.fspath(source), image_dir, report)
        records = _drop_bad_captions(records, report)
        records = _drop_bad_images(records, report, verify_images, num_workers)
        if not records:
            raise ValueError(f"No usable image with a caption in {annotation_file}.\n{report}")
        splits = _fill_missing_splits(records, seed, validation_fraction, test_fraction)
        dataset = _to_dataset_dict(splits)

    report.num_rows = {split: dataset[split].num_rows for split in dataset}
    if report.problems:
        logger.warning(str(report))
    else:
        logger.info(str(report))
    return (dataset, report) if return_report else dataset


def detect_format(source: str) -> str:
    """The format of `source` (see the module docstring), from file and folder names only."""
    source = os.fspath(source)
    if source == "synthetic":
        return "synthetic"
    if not os.path.exists(source):
        # A Hub name is "name" or "owner/name"; anything else that does not exist is a local path typo.
        if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not source.startswith((".", "/")):
            return "hub"
        raise FileNotFoundError(f"Caption source {source!r} does not exist (and is not a Hub dataset name).")
    if os.path.isfile(source):
        return _detect_file_format(source)
    names = set(os.listdir(source))
    if "captions.json" in names:
        return "mini_coco"
    if _karpathy_files(source):
        return "karpathy"
    if _coco_annotation_files(source):
        return "coco"
    if _imagefolder_metadata_files(source):
        return "imagefolder"
    raise ValueError(
        f"Cannot tell the format of {source!r}: expected {' or '.join(METADATA_FILES)} (imagefolder, maybe in "
        "split subfolders), captions.json + Images/ (mini_coco), captions_*.json (coco) or dataset_*.json "
        "(karpathy). Pass dataset_format= to say which."
    )


def _detect_file_format(path: str) -> str:
    name = os.path.basename(path)
    if name in METADATA_FILES:
        return "imagefolder"
    if name == "captions.json":
        return "mini_coco"
    if name.startswith("dataset_") and name.endswith(".json"):
        return "karpathy"
    if name.startswith("captions_") and name.endswith(".json"):
        return "coco"
    raise ValueError(
        f"Cannot tell the format of {path!r} from its name (expected metadata.jsonl/.csv, captions.json, "
        "captions_*.json or dataset_*.json). Pass dataset_format= to say which."
    )


# --------------------------------------------------------------------------------------------------
# Readers: source -> (records, annotation file named in errors). They check structure, not images.
# --------------------------------------------------------------------------------------------------


def _read_imagefolder(source: str, image_dir: Optional[str], report: LoadReport) -> tuple[list[_Record], str]:
    root = os.path.dirname(source) if os.path.isfile(source) else source
    metadata_files = [(source, None)] if os.path.isfile(source) else _imagefolder_metadata_files(root)
    if not metadata_files:
        raise FileNotFoundError(f"No {' or '.join(METADATA_FILES)} in {root!r} or in its split subfolders.")
    records: dict[str, _Record] = {}
    skipped: set[str] = set()  # images of skipped rows: already reported, not "without caption"
    for metadata_path, folder_split in metadata_files:
        folder = os.path.dirname(metadata_path)
        for origin, row in _read_metadata_rows(metadata_path):
            file_name = row["file_name"]
            if not isinstance(file_name, str) or not file_name:
                report.add("malformed_record", origin)
                continue
            image_path = os.path.normpath(os.path.join(image_dir or folder, file_name))
            split = _row_split(row, folder_split, file_name, origin, report)
            if split == _UNKNOWN_SPLIT:
                skipped.add(image_path)
                continue
            record = records.get(image_path)
            if record is None:
                image_id = row.get("image_id") or os.path.splitext(os.path.relpath(image_path, root))[0]
                record = records[image_path] = _Record(
                    image_path, str(image_id).replace(os.sep, "/"), split, origin=origin, objects=row.get("objects")
                )
            elif split != record.split:
                report.add("conflicting_split", f"{origin} ({split} vs {record.split})")
            record.captions.extend(_row_captions(row))
    _report_unannotated_images(image_dir or root, records.keys() | skipped, report)
    return list(records.values()), metadata_files[0][0]


def _imagefolder_metadata_files(root: str) -> list[tuple[str, Optional[str]]]:
    """`(metadata path, split of its folder or None)`: the root's metadata, else the split subfolders'."""
    for name in METADATA_FILES:
        if os.path.isfile(os.path.join(root, name)):
            return [(os.path.join(root, name), None)]
    found = []
    for folder in sorted(os.listdir(root)):
        split = SPLIT_ALIASES.get(folder.lower())
        for name in METADATA_FILES:
            path = os.path.join(root, folder, name)
            if split and os.path.isfile(path):
                found.append((path, split))
                break
    return found


def _read_metadata_rows(path: str):
    """Yield `(origin, row dict)` from metadata.jsonl / metadata.csv; a file that is not one raises."""
    expected = "a `file_name` and a `captions` (list) or `caption` (one per row) column"
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames or [], expected)
            for line_number, row in enumerate(reader, start=2):
                yield f"{path}:{line_number}", row
        return
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}:{line_number} is not valid JSON ({error}); "
                    f"expected one JSON object per line with {expected}."
                ) from None
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path}:{line_number} is a {type(row).__name__}; expected a JSON object with {expected}."
                )
            _check_columns(f"{path}:{line_number}", list(row), expected)
            yield f"{path}:{line_number}", row


def _check_columns(where: str, columns: list, expected: str) -> None:
    if "file_name" not in columns or not ({"captions", "caption"} & set(columns)):
        raise ValueError(f"{where} has columns {sorted(columns)}; expected {expected}.")


def _row_captions(row: dict) -> list:
    if "captions" in row:
        captions = row["captions"]
        if isinstance(captions, str) and captions.lstrip().startswith("["):
            try:  # a JSON list in a CSV cell
                captions = json.loads(captions)
            except json.JSONDecodeError:
                pass
        return captions if isinstance(captions, list) else [captions]
    return [row["caption"]]


def _row_split(
    row: dict, folder_split: Optional[str], file_name: str, origin: str, report: LoadReport
) -> Optional[str]:
    """The `split` column, else the split subfolder, else a split-named first directory of `file_name`.

    `None` means "no split given" (carved later); `_UNKNOWN_SPLIT` means the row was reported and is skipped.
    """
    if row.get("split"):
        split = SPLIT_ALIASES.get(str(row["split"]).lower())
        if split is None:
            report.add("unknown_split", f"{origin} ({row['split']!r})")
            return _UNKNOWN_SPLIT
        return split
    if folder_split:
        return folder_split
    first_directory = file_name.replace("\\", "/").split("/")[0]
    return SPLIT_ALIASES.get(first_directory.lower()) if "/" in file_name else None


def _read_mini_coco(source: str, image_dir: Optional[str], report: LoadReport) -> tuple[list[_Record], str]:
    annotation_file = source if os.path.isfile(source) else os.path.join(source, "captions.json")
    image_dir = image_dir or os.path.join(os.path.dirname(annotation_file), "Images")
    data = _read_json(annotation_file, "a list of {'image_id', 'caption'} records")
    annotations = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(annotations, list):
        raise ValueError(
            f"{annotation_file} holds a {type(data).__name__}; expected a list of {{'image_id', 'caption'}} records."
        )
    records: dict[str, _Record] = {}
    for index, annotation in enumerate(annotations):
        origin = f"{annotation_file}[{index}]"
        if not isinstance(annotation, dict) or annotation.get("image_id") is None:
            report.add("caption_without_image", origin)
            continue
        image_id = annotation["image_id"]
        try:
            file_name = MINI_COCO_IMAGE_TEMPLATE.format(int(image_id))
        except (TypeError, ValueError):
            report.add("malformed_record", f"{origin} (image_id {image_id!r})")
            continue
        record = records.get(file_name)
        if record is None:
            record = records[file_name] = _Record(
                os.path.join(image_dir, file_name), str(image_id), None, origin=origin
            )
        record.captions.append(annotation.get("caption"))
    _report_unannotated_images(image_dir, records, report, key=os.path.basename)
    return list(records.values()), annotation_file


def _read_coco(source: str, image_dir: Optional[str], report: LoadReport) -> tuple[list[_Record], str]:
    annotation_files = [source] if os.path.isfile(source) else _coco_annotation_files(source)
    if not annotation_files:
        raise FileNotFoundError(
            f"No COCO caption annotations (captions_*.json) in {source!r} or {os.path.join(source, 'annotations')!r}."
        )
    records: list[_Record] = []
    for annotation_file in annotation_files:
        records += _read_coco_file(annotation_file, image_dir, report)
    return records, annotation_files[0]


def _coco_annotation_files(folder: str) -> list[str]:
    found = []
    for directory in (folder, os.path.join(folder, "annotations")):
        if os.path.isdir(directory):
            found += [
                os.path.join(directory, name)
                for name in sorted(os.listdir(directory))
                if re.fullmatch(r"captions_.+\.json", name)
            ]
    return found


def _read_coco_file(annotation_file: str, image_dir: Optional[str], report: LoadReport) -> list[_Record]:
    expected = "an object with 'images' (id, file_name) and 'annotations' (image_id, caption) lists"
    data = _read_json(annotation_file, expected)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise ValueError(f"{annotation_file} is not COCO caption annotations; expected {expected}.")
    # "captions_train2014.json" -> images in "train2014/", split "train".
    subset = os.path.basename(annotation_file)[len("captions_") : -len(".json")]
    split = next((SPLIT_ALIASES[word] for word in re.findall(r"[a-z]+", subset) if word in SPLIT_ALIASES), None)
    roots = (
        [image_dir]
        if image_dir
        else [os.path.dirname(annotation_file), os.path.dirname(os.path.dirname(annotation_file))]
    )
    records: dict[Any, _Record] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            report.add("malformed_record", f"{annotation_file} images[{index}]")
            continue
        path = _first_existing(
            [os.path.join(root, folder, image["file_name"]) for root in roots for folder in (subset, "")]
        )
        records[image["id"]] = _Record(path, str(image["id"]), split, origin=f"{annotation_file} images[{index}]")
    for index, annotation in enumerate(data["annotations"]):
        record = records.get(annotation.get("image_id")) if isinstance(annotation, dict) else None
        if record is None:
            report.add("caption_without_image", f"{annotation_file} annotations[{index}]")
            continue
        record.captions.append(annotation.get("caption"))
    return list(records.values())


def _read_karpathy(source: str, image_dir: Optional[str], report: LoadReport) -> tuple[list[_Record], str]:
    if os.path.isfile(source):
        annotation_file = source
    else:
        candidates = _karpathy_files(source)
        if not candidates:
            raise FileNotFoundError(f"No Karpathy split file (dataset_*.json, e.g. dataset_coco.json) in {source!r}.")
        annotation_file = candidates[0]
    expected = "an object with an 'images' list of {filepath, filename, split, sentences: [{raw}]}"
    data = _read_json(annotation_file, expected)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{annotation_file} is not a Karpathy split file; expected {expected}.")
    image_root = image_dir or os.path.dirname(annotation_file)
    records = []
    for index, image in enumerate(data["images"]):
        origin = f"{annotation_file} images[{index}]"
        if (
            not isinstance(image, dict)
            or not isinstance(image.get("filename"), str)
            or not isinstance(image.get("sentences"), list)
        ):
            report.add("malformed_record", origin)
            continue
        split = SPLIT_ALIASES.get(str(image.get("split", "")).lower())
        if split is None:
            report.add("unknown_split", f"{origin} ({image.get('split')!r})")
            continue
        path = os.path.join(image_root, image.get("filepath") or "", image["filename"])
        image_id = image.get("cocoid", image.get("imgid", image["filename"]))
        captions = [sentence.get("raw") if isinstance(sentence, dict) else sentence for sentence in image["sentences"]]
        records.append(_Record(path, str(image_id), split, captions, origin=origin))
    return records, annotation_file


def _karpathy_files(folder: str) -> list[str]:
    return [
        os.path.join(folder, name) for name in sorted(os.listdir(folder)) if re.fullmatch(r"dataset_.+\.json", name)
    ]


def _read_json(path: str, expected: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file {path!r} does not exist; expected {expected}.")
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); expected {expected}.") from None


def _first_existing(paths: list[str]) -> str:
    # Missing images are reported later by the image check, under the first candidate's name.
    return next((path for path in paths if os.path.exists(path)), paths[0])


def _report_unannotated_images(folder: str, annotated_paths, report: LoadReport, key=None) -> None:
    """Count image files under `folder` that no annotation mentions (they cannot be trained on)."""
    annotated = set(annotated_paths) if key is None else {key(path) for path in annotated_paths}
    for directory, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            path = os.path.normpath(os.path.join(directory, name))
            if name.lower().endswith(IMAGE_EXTENSIONS) and (key(path) if key else path) not in annotated:
                report.add("image_without_caption", path)


# --------------------------------------------------------------------------------------------------
# Validation, splits, datasets
# --------------------------------------------------------------------------------------------------


def _drop_bad_captions(records: list[_Record], report: LoadReport) -> list[_Record]:
    kept = []
    for record in records:
        captions = []
        for caption in record.captions:
            if not isinstance(caption, str):
                report.add("non_text_caption", f"{record.origin} ({caption!r})")
            elif not caption.strip():
                report.add("empty_caption", record.origin)
            else:
                captions.append(caption.strip())
        if captions:
            record.captions = captions
            kept.append(record)
        else:
            report.add("image_without_caption", record.image_path)
    return kept


def _drop_bad_images(
    records: list[_Record], report: LoadReport, verify_images: str, num_workers: Optional[int]
) -> list[_Record]:
    # Threads, not processes: the work is file I/O and PIL decoding, both of which release the GIL.
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        problems = list(pool.map(lambda record: image_problem(record.image_path, verify_images), records))
    kept = []
    for record, problem in zip(records, problems):
        if problem is None:
            kept.append(record)
        else:
            report.add(problem, record.image_path)
    return kept


def image_problem(path: str, verify_images: str = "fast") -> Optional[str]:
    """`None` for a usable image file, else its problem: `missing_image`, `unreadable_image` or `truncated_image`."""
    if not os.path.isfile(path):
        return "missing_image"
    if verify_images == "off":
        return None
    try:
        with Image.open(path) as image:
            if verify_images == "full":
                image.load()
            elif image.format == "JPEG":
                # verify() does not check JPEG data; a complete JPEG ends with the EOI marker (some
                # writers append a few padding bytes, hence the search in the tail).
                if not _has_jpeg_end_marker(path):
                    return "truncated_image"
            else:
                image.verify()  # PNG: walks every chunk and checks its CRC, without decoding
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # PIL says "truncated" for files that end early, other messages for files that are not images.
        return "truncated_image" if "truncated" in str(error).lower() else "unreadable_image"
    return None


def _has_jpeg_end_marker(path: str, tail_bytes: int = 1024) -> bool:
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - tail_bytes))
        return b"\xff\xd9" in handle.read()


def _fill_missing_splits(
    records: list[_Record], seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[_Record]]:
    """Group records by split; carve a missing validation/test split from train's images (seeded, by image).

    A source without any training image (e.g. only `captions_val2014.json`) is all pooled into train first:
    its split labels cannot give a usable train split.
    """
    splits = {split: [] for split in SPLITS}
    for record in records:
        splits[record.split or "train"].append(record)
    if not splits["train"]:
        splits = {"train": list(records), "validation": [], "test": []}
    fractions = {
        split: fraction
        for split, fraction in (("validation", validation_fraction), ("test", test_fraction))
        if not splits[split]
    }
    if not fractions:
        return splits
    pool = splits["train"]
    # ceil: a fraction > 0 always yields at least one image, even from a small source.
    sizes = {split: math.ceil(fraction * len(pool)) for split, fraction in fractions.items()}
    if sum(sizes.values()) >= len(pool) > 0:
        raise ValueError(
            f"Cannot carve {sizes} images for missing splits out of {len(pool)} training images; lower the fractions."
        )
    order = np.random.default_rng(seed).permutation(len(pool))
    start = 0
    for split, size in sizes.items():
        chosen = sorted(order[start : start + size])  # keep source order within a split
        splits[split] = [pool[index] for index in chosen]
        start += size
    splits["train"] = [pool[index] for index in sorted(order[start:])]
    return splits


def _to_dataset_dict(splits: dict[str, list[_Record]]) -> datasets.DatasetDict:
    features = {
        "image": datasets.Image(),
        "captions": datasets.List(datasets.Value("string")),
        "image_id": datasets.Value("string"),
    }
    records = [record for split_records in splits.values() for record in split_records]
    # Objects (ground truth of a written synthetic folder) are kept only when every image has them.
    with_objects = bool(records) and all(isinstance(record.objects, list) for record in records)
    if with_objects:
        features["objects"] = synthetic.OBJECTS_FEATURE
    result = {}
    for split, split_records in splits.items():
        columns = {
            "image": [record.image_path for record in split_records],
            "captions": [record.captions for record in split_records],
            "image_id": [record.image_id for record in split_records],
        }
        if with_objects:
            columns["objects"] = [record.objects for record in split_records]
        result[split] = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return datasets.DatasetDict(result)


# --------------------------------------------------------------------------------------------------
# Hub datasets (network; not covered by the offline tests)
# --------------------------------------------------------------------------------------------------

_HUB_CAPTION_COLUMNS = ("captions", "caption", "sentences", "text", "raw")
_HUB_ID_COLUMNS = ("image_id", "cocoid", "imgid", "id", "filename", "file_name")


def _load_hub(
    name: str, report: LoadReport, seed: int, validation_fraction: float, test_fraction: float, hub_kwargs: dict
) -> datasets.DatasetDict:
    loaded = datasets.load_dataset(name, **hub_kwargs)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits = {}
    for split_name, dataset in loaded.items():
        split = SPLIT_ALIASES.get(split_name.lower())
        if split is None:
            report.add("unknown_split", f"{name} split {split_name!r}")
            continue
        splits[split] = _normalise_hub_split(dataset, f"{name}[{split_name}]", report)
    if "train" not in splits:
        raise ValueError(f"Hub dataset {name!r} has no train split (found {sorted(loaded)}).")
    for split, fraction in (("validation", validation_fraction), ("test", test_fraction)):
        if split not in splits:
            carved = splits["train"].train_test_split(test_size=fraction, seed=seed)
            splits["train"], splits[split] = carved["train"], carved["test"]
    return datasets.DatasetDict({split: splits[split] for split in SPLITS})


def _normalise_hub_split(dataset: datasets.Dataset, where: str, report: LoadReport) -> datasets.Dataset:
    image_column = next(
        (name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)), None
    )
    caption_column = next((name for name in _HUB_CAPTION_COLUMNS if name in dataset.column_names), None)
    if image_column is None or caption_column is None:
        raise ValueError(
            f"{where} has columns {dataset.column_names}; expected an Image column and one of {_HUB_CAPTION_COLUMNS}."
        )
    id_column = next((name for name in _HUB_ID_COLUMNS if name in dataset.column_names), None)

    def normalise(row, index):
        captions = row[caption_column] if isinstance(row[caption_column], list) else [row[caption_column]]
        captions = [caption.get("raw") if isinstance(caption, dict) else caption for caption in captions]
        clean = [caption.strip() for caption in captions if isinstance(caption, str) and caption.strip()]
        image_id = str(row[id_column]) if id_column else f"{where}-{index}"
        return {"captions": clean, "image_id": image_id, "image": row[image_column]}

    columns = {
        "image": datasets.Image(),
        "captions": datasets.List(datasets.Value("string")),
        "image_id": datasets.Value("string"),
    }
    dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    dataset = dataset.map(
        normalise, with_indices=True, remove_columns=dataset.column_names, features=datasets.Features(columns)
    )
    if id_column:
        dataset = _one_row_per_image(dataset)
    without_captions = dataset.filter(lambda row: not row["captions"])
    for image_id in without_captions["image_id"]:
        report.add("image_without_caption", f"{where} {image_id}")
    return dataset.filter(lambda row: bool(row["captions"]))


def _one_row_per_image(dataset: datasets.Dataset) -> datasets.Dataset:
    """Merge rows with the same `image_id` (datasets with one caption per row): captions in row order."""
    image_ids = dataset["image_id"]
    if len(set(image_ids)) == len(image_ids):
        return dataset
    first_row, merged = {}, {}
    for row, (image_id, captions) in enumerate(zip(image_ids, dataset["captions"])):
        first_row.setdefault(image_id, row)
        merged.setdefault(image_id, []).extend(captions)
    kept = dataset.select(list(first_row.values()))
    return kept.remove_columns("captions").add_column(
        "captions", [merged[image_id] for image_id in first_row], feature=datasets.List(datasets.Value("string"))
    ).select_columns(["image", "captions", "image_id"])
