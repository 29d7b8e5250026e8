"""Cache the frozen vision encoder's outputs on disk, so that later epochs run only the projector and the decoder.

Valid only when the encoder is frozen and images are not augmented: then `vision_model(pixel_values)` is the
same every epoch. We store `last_hidden_state` (B, P, Dv), BEFORE the projector, so the projector still trains.

    cache = ImageFeatureCache.build_or_load(cache_root, model, image_processor, train_dataset)   # epoch 0 cost
    loader = DataLoader(cache.dataset(train_dataset), collate_fn=CachedFeatureCollator(collator), ...)
    loss = forward_with_cached_features(model, batch).loss                                     # no encoder call

Where: `cache_root/<key>/features-00000-of-0000N.safetensors` (one float tensor `features`, rows in dataset
order) and `meta.json`, written last, so a folder without it is an interrupted build and is rebuilt. `key`
hashes the encoder's weights and config, the image-processor settings, the dataset's fingerprint and the
stored dtype: change any of them and a new folder is used, so a stale cache is never read.

Size: P x Dv x 4 bytes per image (ViT-B/16 at 224: 197 x 768 x 4 = 605 KB; 10k images = 6 GB). Shards are
memory-mapped, so RAM use stays flat. `dtype=torch.float16` halves the disk use but changes the losses
(by ~1e-3); the default float32 matches the uncached run.
"""

import hashlib
import json
import os
import shutil
import struct
from typing import Optional

import numpy as np
import torch

FORMAT_VERSION = 1
META_FILE = "meta.json"
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16}
_TORCH_NAMES = {torch.float32: "float32", torch.float16: "float16"}


def encoder_fingerprint(vision_model) -> str:
    """Hash of every weight (name, dtype, shape, bytes) and the config of the vision encoder."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(vision_model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(vision_model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def image_processor_fingerprint(image_processor) -> str:
    """Hash of the image-processor settings that decide the pixels (size, resampling, mean/std, background...)."""
    settings = image_processor.to_dict() if hasattr(image_processor, "to_dict") else dict(vars(image_processor))
    settings = {k: v for k, v in settings.items() if not k.startswith("_") and k != "processor_class"}
    return hashlib.blake2b(json.dumps(settings, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def dataset_fingerprint(dataset) -> str:
    fingerprint = getattr(dataset, "_fingerprint", None)
    if not fingerprint:
        raise ValueError(
            "The dataset has no fingerprint (`datasets.Dataset._fingerprint`); pass `dataset_fingerprint=` that "
            "changes whenever its images or their order change."
        )
    return str(fingerprint)


def cache_key(vision_model, image_processor, dataset=None, dataset_fingerprint_=None, dtype=torch.float32) -> str:
    parts = {
        "format": FORMAT_VERSION,
        "encoder": encoder_fingerprint(vision_model),
        "image_processor": image_processor_fingerprint(image_processor),
        "dataset": dataset_fingerprint_ or dataset_fingerprint(dataset),
        "dtype": _TORCH_NAMES[dtype],
    }
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


class ImageFeatureCache:
    """Read access to one complete cache folder: `features(indices)` -> float32 tensor (len(indices), P, Dv)."""

    def __init__(self, folder: str):
        with open(os.path.join(folder, META_FILE), encoding="utf-8") as f:
            self.meta = json.load(f)
        self.folder = folder
        self.num_rows = self.meta["num_rows"]
        self.shard_size = self.meta["shard_size"]
        self._shards = [_memmap_safetensors(os.path.join(folder, name)) for name in self.meta["shards"]]

    def __len__(self):
        return self.num_rows

    def features(self, indices) -> torch.Tensor:
        rows = [np.asarray(self._shards[i // self.shard_size][i % self.shard_size]) for i in indices]
        return torch.from_numpy(np.stack(rows)).float()  # copies out of the memory map

    def dataset(self, dataset):
        """`dataset` (the one the cache was built from, same order) with `image_features` instead of `image`."""
        if len(dataset) != self.num_rows:
            raise ValueError(f"The cache holds {self.num_rows} rows but the dataset has {len(dataset)}.")
        return CachedFeatureDataset(dataset, self)

    @classmethod
    def build_or_load(
        cls,
        cache_root: str,
        model,
        image_processor,
        dataset,
        dataset_fingerprint: Optional[str] = None,
        batch_size: int = 32,
        shard_size: int = 2048,
        dtype: torch.dtype = torch.float32,
        accelerator=None,
        log=print,
    ):
        """The cache for this encoder + image processing + dataset: loaded if complete, else computed now.

        `model` is the captioner (its `vision_model` must be frozen). With an `accelerator`, the main process
        builds first and the others then load its files (`main_process_first`); the encoder runs on the
        model's device. The dataset rows need an `image` (PIL image, path or `datasets` image dict).
        """
        vision_model = model.vision_model
        if any(p.requires_grad for p in vision_model.parameters()):
            raise ValueError("Image features can only be cached with a frozen encoder (requires_grad_(False)).")
        if dtype not in _TORCH_NAMES:
            raise ValueError(f"`dtype` must be one of {list(_TORCH_NAMES)}, got {dtype}.")
        key = cache_key(vision_model, image_processor, dataset, dataset_fingerprint, dtype)
        folder = os.path.join(cache_root, key)
        context = accelerator.main_process_first() if accelerator is not None else _nullcontext()
        with context:
            if not os.path.isfile(os.path.join(folder, META_FILE)):
                if accelerator is None or accelerator.is_main_process:
                    _build(folder, key, vision_model, image_processor, dataset, batch_size, shard_size, dtype, log)
            return cls(folder)


def _build(folder, key, vision_model, image_processor, dataset, batch_size, shard_size, dtype, log):
    from safetensors.torch import save_file

    from .caption_collator import _decode_image

    partial = folder + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    num_rows = len(dataset)
    num_shards = max(1, -(-num_rows // shard_size))
    device = next(vision_model.parameters()).device
    weight_dtype = next(vision_model.parameters()).dtype
    was_training = vision_model.training
    vision_model.eval()  # frozen encoder: dropout (if any) off, as it is for its features at inference
    shards = []
    log(f"Caching image features of {num_rows} images in {folder} ({num_shards} shard(s))")
    try:
        for shard in range(num_shards):
            chunks = []
            for start in range(shard * shard_size, min(num_rows, (shard + 1) * shard_size), batch_size):
                stop = min(start + batch_size, (shard + 1) * shard_size, num_rows)
                images = [_decode_image(image) for image in dataset[start:stop]["image"]]
                pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
                with torch.no_grad():
                    hidden = vision_model(pixel_values=pixel_values.to(device, weight_dtype)).last_hidden_state
                chunks.append(hidden.to("cpu", dtype))  # (b, P, Dv)
            name = f"features-{shard:05d}-of-{num_shards:05d}.safetensors"
            save_file({"features": torch.cat(chunks).contiguous()}, os.path.join(partial, name))
            shards.append(name)
    finally:
        vision_model.train(was_training)
    meta = {"format": FORMAT_VERSION, "key": key, "num_rows": num_rows, "shard_size": shard_size, "shards": shards}
    with open(os.path.join(partial, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted build (no meta.json) of the same key
    os.replace(partial, folder)


def _memmap_safetensors(path):
    """The `features` tensor of a safetensors file as a read-only numpy memory map (no copy, no full read)."""
    with open(path, "rb") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_length))
    entry = header["features"]
    begin, _ = entry["data_offsets"]
    return np.memmap(
        path, dtype=_NUMPY_DTYPES[entry["dtype"]], mode="r", offset=8 + header_length + begin, shape=tuple(entry["shape"])
    )


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Rows of `dataset` without their image, plus `feature_index` (the row's position in the cache)."""

    def __init__(self, dataset, cache: ImageFeatureCache):
        self.rows = dataset.remove_columns("image") if "image" in getattr(dataset, "column_names", []) else dataset
        self.cache = cache

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        row = dict(self.rows[index])
        row.pop("image", None)
        row["feature_index"] = int(index)
        return row


class CachedFeatureCollator:
    """Wraps a `CaptionCollator`: same caption choice and tokenisation, `image_features` instead of `pixel_values`."""

    def __init__(self, collator, cache: ImageFeatureCache):
        self.collator = collator
        self.cache = cache

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, rows):
        captions = [self.collator.pick_caption(row["captions"], str(row["image_id"])) for row in rows]
        batch = dict(self.collator.processor(text=captions, max_length=self.collator.max_length, return_tensors="pt"))
        batch["image_features"] = self.cache.features([row["feature_index"] for row in rows])  # (B, P, Dv)
        return batch


def forward_with_cached_features(model, batch, **kwargs):
    """`model(**batch, **kwargs)` for a batch from `CachedFeatureCollator`: projector + [SEP] + decoder, no encoder.

    Same result as `model(pixel_values=...)`: the pooling and projector run on the cached `last_hidden_state` here, and
    forward appends [SEP] to `image_embeds` exactly as it does for pixel values.
    """
    batch = dict(batch)
    features = batch.pop("image_features")
    captioner = getattr(model, "module", model)  # DDP / accelerate wrap the model in `.module`
    weight = captioner.projector.linear_1.weight
    # The cache was built at the image processor's size, which is the encoder's configured size.
    image_embeds = captioner.project_image_features(features.to(weight.device, weight.dtype))
    return model(image_embeds=image_embeds, **batch, **kwargs)
