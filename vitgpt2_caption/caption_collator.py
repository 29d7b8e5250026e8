"""Batches of caption rows for training: one reference caption per image per epoch.

Which caption: image `image_id` has its own permutation of its `n` captions, seeded by
`(seed, image_id)`, and epoch `e` uses entry `e % n`. So the choice is random-looking (as in the
original, which drew one caption per image per epoch) but reproducible, independent of batch order,
shuffling and worker count, and over any `n` consecutive epochs every caption of the image is used
exactly once (COCO's 5 references: all of them in 5 epochs, instead of ~67% with independent draws).

Call `set_epoch(epoch)` at the start of every epoch. DataLoader workers receive a copy of the collator
when the epoch's iterator is created, so this works with `num_workers > 0` as long as
`persistent_workers=False` (the default); persistent workers would keep the epoch they started with.
"""

import hashlib
from typing import Any, Optional

import datasets
import numpy as np


class CaptionCollator:
    """`collate_fn`: rows `{image, captions, image_id}` -> `pixel_values`, `input_ids`, `attention_mask`, `labels`.

    Images may be decoded PIL images, `datasets.Image` dicts (`{"path", "bytes"}`, from a dataset cast with
    `decode=False`) or file paths; decoding and preprocessing happen here, i.e. in the DataLoader workers.
    The processor tokenises (`[BOS, caption, EOS, PAD...]`, over-long captions cut but keeping EOS).

    Args:
        processor: a `ViTGPT2CaptionProcessor` (anything with its `__call__(images=, text=, max_length=)`).
        max_length: maximum tokens per caption including BOS and EOS (`None`: the processor's default).
        seed: with the epoch and the image id, decides which caption each image gets.
        return_image_ids: also return `image_ids` (a list of str); off by default so that the batch can
            be passed to the model as `model(**batch)`.
    """

    def __init__(self, processor, max_length: Optional[int] = None, seed: int = 0, return_image_ids: bool = False):
        self.processor = processor
        self.max_length = max_length
        self.seed = seed
        self.return_image_ids = return_image_ids
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pick_caption(self, captions: list[str], image_id: str) -> str:
        """The caption of `image_id` for the current epoch (see the module docstring)."""
        if not captions:
            raise ValueError(
                f"Image {image_id!r} has no caption; load data with `load_caption_dataset`, which drops such rows."
            )
        order = np.random.default_rng([self.seed, _stable_hash(image_id)]).permutation(len(captions))
        return captions[order[self.epoch % len(captions)]]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        images = [_decode_image(row["image"]) for row in rows]
        captions = [self.pick_caption(row["captions"], str(row["image_id"])) for row in rows]
        batch = dict(self.processor(images=images, text=captions, max_length=self.max_length, return_tensors="pt"))
        if self.return_image_ids:
            batch["image_ids"] = [str(row["image_id"]) for row in rows]
        return batch


def _stable_hash(text: str) -> int:
    # Python's hash() of a str is salted per process, so DataLoader workers would disagree on it.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_IMAGE_FEATURE = datasets.Image()


def _decode_image(image: Any) -> Any:
    # A `{"path", "bytes"}` dict is datasets' undecoded image; PIL images and paths go to the processor as is.
    if isinstance(image, dict):
        return _IMAGE_FEATURE.decode_example(image)
    return image
