"""Image processor and processor (image processor + tokenizer) of the ViT-GPT-2 captioner.

Remote code: this file is copied into every saved model folder. It needs only PIL, numpy, torch and
`transformers`, and reads and writes its own small JSON files, so a folder saved under one
transformers 5.x release loads under another (the built-in ViT image processors were renamed within 5.x).
"""

import json
import os

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from transformers import AutoTokenizer, BatchFeature
from transformers.image_processing_utils import ImageProcessingMixin
from transformers.processing_utils import ProcessorMixin

IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
PAD_TOKEN = "<|pad|>"

# PIL's resampling filters by name, so configs stay readable JSON.
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
# transformers' image processors store PIL's integer codes.
_RESAMPLE_BY_CODE = {int(v): k for k, v in _RESAMPLE.items()}


def _describe(image):
    return repr(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else f"a {type(image).__name__}"


def _open_image_file(path):
    """Open and fully decode an image file, with errors that name the file and the problem."""
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        from transformers.image_utils import load_image

        return load_image(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file not found: {path!r}.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected an image file but got a directory: {path!r}.")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global PIL setting elsewhere would otherwise turn a truncated file into a silently grey image.
        raise ValueError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to caption partially decoded images.")
    try:
        image = Image.open(path)
    except UnidentifiedImageError as err:
        raise ValueError(f"{path!r} is not an image file PIL can read ({err}).") from err
    try:
        image.load()  # Image.open is lazy: truncation only shows when the pixels are decoded.
    except (OSError, SyntaxError) as err:
        raise ValueError(f"Image file {path!r} is truncated or corrupt: {err}.") from err
    return image


def _to_rgb(image, background):
    """Any PIL mode -> 8-bit RGB. Transparency is composited on `background`, not dropped to black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale (medical, scientific, PNG-16): map the numeric range to 0..255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "F" and array.max() <= 1.0:
            peak = 1.0
        array = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array)  # uint8 HxW -> "L"
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, tuple(background) + (255,))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB")


def _to_pil(image, background):
    """A PIL image, a path, a numpy array (HW, HWC or CHW) or a torch tensor -> RGB PIL image."""
    if isinstance(image, (str, os.PathLike)):
        image = _open_image_file(image)
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # CHW -> HWC
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
            raise ValueError(f"An image array must be HW, HWC or CHW with 1, 3 or 4 channels; got shape {array.shape}.")
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.number):
                raise ValueError(f"An image array must be numeric; got dtype {array.dtype}.")
            # Floats are taken as 0..1, other integer types as 0..255.
            scale = 255.0 if np.issubdtype(array.dtype, np.floating) else 1.0
            array = np.clip(array.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"Expected an image (PIL image, file path, numpy array or torch tensor); got {type(image).__name__}."
        )
    if image.width < 1 or image.height < 1:
        raise ValueError(f"Image has no pixels (size {image.size}).")
    image = ImageOps.exif_transpose(image)  # photos from phones carry their rotation in EXIF
    return _to_rgb(image, background)


class ViTGPT2CaptionImageProcessor(ImageProcessingMixin):
    r"""
    Turns images into the encoder's `pixel_values`: any PIL mode, file paths, numpy arrays and tensors, any size.

    Args:
        size (`dict`, *optional*, defaults to `{"height": 224, "width": 224}`): output size; images are resized
            to it directly (no crop, so nothing at the border is cut off from the caption).
        resample (`str`, *optional*, defaults to `"bicubic"`): PIL filter used for resizing.
        image_mean, image_std (`list[float]`, *optional*, default 0.5 each): per-channel normalisation.
        background_color (`list[int]`, *optional*, defaults to white): colour under transparent pixels.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size=None,
        resample="bicubic",
        image_mean=None,
        image_std=None,
        background_color=None,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        size = dict(size or {"height": 224, "width": 224})
        if "shortest_edge" in size:  # some checkpoints describe square inputs this way
            size = {"height": size["shortest_edge"], "width": size["shortest_edge"]}
        if set(size) != {"height", "width"} or min(size.values()) < 1:
            raise ValueError(f"`size` must be {{'height': int > 0, 'width': int > 0}}, got {size}.")
        if isinstance(resample, int):
            resample = _RESAMPLE_BY_CODE.get(resample, "bicubic")
        if resample not in _RESAMPLE:
            raise ValueError(f"`resample` must be one of {sorted(_RESAMPLE)}, got {resample!r}.")
        self.size = {"height": int(size["height"]), "width": int(size["width"])}
        self.resample = resample
        self.image_mean = list(image_mean if image_mean is not None else [0.5, 0.5, 0.5])
        self.image_std = list(image_std if image_std is not None else [0.5, 0.5, 0.5])
        self.background_color = list(background_color if background_color is not None else [255, 255, 255])
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("`image_mean` and `image_std` need 3 values each, and `image_std` must be positive.")

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path, **hub_kwargs):
        """The image settings (size, resampling, mean, std) of a ViT/DeiT checkpoint's image processor."""
        encoder_config = _read_json(encoder_name_or_path, IMAGE_PROCESSOR_FILE, hub_kwargs)
        return cls(**{k: encoder_config[k] for k in ("size", "resample", "image_mean", "image_std") if k in encoder_config})

    def preprocess_one(self, image):
        """One image (any accepted input) -> float32 array (3, H, W)."""
        rgb = _to_pil(image, self.background_color)
        rgb = rgb.resize((self.size["width"], self.size["height"]), resample=_RESAMPLE[self.resample])
        array = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
        array = (array - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return array.transpose(2, 0, 1)  # (3, H, W)

    def preprocess(self, images, return_tensors="pt"):
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("Got an empty list of images.")
        arrays = []
        for index, image in enumerate(images):
            try:
                arrays.append(self.preprocess_one(image))
            except (OSError, ValueError, TypeError) as err:
                if len(images) == 1:
                    raise
                raise type(err)(f"Image {index} ({_describe(image)}): {err}") from err
        return BatchFeature({"pixel_values": np.stack(arrays)}, tensor_type=return_tensors)

    __call__ = preprocess


class ViTGPT2CaptionProcessor(ProcessorMixin):
    r"""
    The captioner's processor: [`ViTGPT2CaptionImageProcessor`] for images and a GPT-2 style tokenizer for captions.

    Captions become `input_ids = [BOS, caption..., EOS, PAD...]`, `attention_mask`, and
    `labels = [-100, caption..., EOS, -100...]`: the model learns to emit EOS and never learns padding.
    PAD must be its own token (not EOS), or a model that learns EOS would also be taught on padding.
    """

    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "ViTGPT2CaptionImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, max_caption_length=64, **kwargs):
        if not isinstance(image_processor, ViTGPT2CaptionImageProcessor):
            raise TypeError(f"`image_processor` must be a ViTGPT2CaptionImageProcessor, got {type(image_processor)}.")
        if tokenizer is None:
            raise TypeError("`tokenizer` is required.")
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        for name, token_id in special.items():
            if token_id is None:
                raise ValueError(f"The tokenizer has no {name[:-9]} token; captions need BOS and EOS.")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id in special.values():
            raise ValueError(
                "The tokenizer needs a padding token distinct from BOS/EOS (GPT-2's has none): add one with "
                f"`tokenizer.add_special_tokens({{'pad_token': {PAD_TOKEN!r}}})` and resize the model's embeddings."
            )
        if max_caption_length < 3:
            raise ValueError(f"`max_caption_length` must be at least 3 (BOS, one token, EOS), got {max_caption_length}.")
        # Set directly: ProcessorMixin.__init__'s class checks differ across transformers 5.x releases.
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_caption_length = int(max_caption_length)
        self.chat_template = None

    # --- captions ---
    def encode_captions(self, captions, max_length=None, padding="longest"):
        """Captions -> `input_ids`, `attention_mask`, `labels` (lists). Over-long captions are cut but keep EOS."""
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, (list, tuple)) or len(captions) == 0:
            raise ValueError("`text` must be a caption string or a non-empty list of caption strings.")
        for index, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"Caption {index} must be a non-empty string, got {caption!r}.")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"`padding` must be 'longest' or 'max_length', got {padding!r}.")
        max_length = self.max_caption_length if max_length is None else int(max_length)
        if max_length < 3:
            raise ValueError(f"`max_length` must be at least 3 (BOS, one token, EOS), got {max_length}.")
        tok = self.tokenizer
        bodies = tok([c.strip() for c in captions], add_special_tokens=False)["input_ids"]
        bodies = [body[: max_length - 2] for body in bodies]
        width = max_length if padding == "max_length" else max(len(b) for b in bodies) + 2
        input_ids, attention_mask, labels = [], [], []
        for body in bodies:
            pad = width - len(body) - 2
            input_ids.append([tok.bos_token_id] + body + [tok.eos_token_id] + [tok.pad_token_id] * pad)
            attention_mask.append([1] * (len(body) + 2) + [0] * pad)
            labels.append([-100] + body + [tok.eos_token_id] + [-100] * pad)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def __call__(self, images=None, text=None, max_length=None, padding="longest", return_tensors="pt", **kwargs):
        """`images` -> `pixel_values`; `text` (captions) -> `input_ids`, `attention_mask`, `labels`."""
        if images is None and text is None:
            raise ValueError("Pass `images`, `text` (captions), or both.")
        if kwargs:
            raise TypeError(f"Unexpected arguments: {sorted(kwargs)}.")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=None))
        if text is not None:
            data.update(self.encode_captions(text, max_length=max_length, padding=padding))
            if images is not None:
                num_images = len(images) if isinstance(images, (list, tuple)) else 1
                if num_images != len(data["input_ids"]):
                    raise ValueError(f"Got {num_images} images and {len(data['input_ids'])} captions; pass one per image.")
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, sequences, **kwargs):
        """Token ids -> clean captions (special tokens and surrounding spaces removed)."""
        kwargs.setdefault("skip_special_tokens", True)
        return [text.strip() for text in self.tokenizer.batch_decode(sequences, **kwargs)]

    def decode(self, sequence, **kwargs):
        return self.batch_decode([sequence], **kwargs)[0]

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask"]

    # --- saving and loading: our own small files, identical on every transformers 5.x ---
    def save_pretrained(self, save_directory, push_to_hub=False, **kwargs):
        if push_to_hub:
            raise ValueError("Use the project's push_to_hub.py (or huggingface_hub.upload_folder) to publish.")
        os.makedirs(save_directory, exist_ok=True)
        module = type(self).__module__.rsplit(".", 1)[-1]
        processor_ref = f"{module}.{type(self).__name__}"
        image_ref = f"{module}.{type(self.image_processor).__name__}"
        auto_map = {"AutoProcessor": processor_ref, "AutoImageProcessor": image_ref}

        image_config = self.image_processor.to_dict()
        image_config.update({"image_processor_type": type(self.image_processor).__name__, "auto_map": auto_map})
        image_config.pop("_processor_class", None)
        _write_json(os.path.join(save_directory, IMAGE_PROCESSOR_FILE), image_config)
        _write_json(
            os.path.join(save_directory, PROCESSOR_FILE),
            {"processor_class": type(self).__name__, "auto_map": auto_map, "max_caption_length": self.max_caption_length},
        )
        self.tokenizer.save_pretrained(save_directory)
        source = os.path.abspath(__file__)
        target = os.path.join(save_directory, os.path.basename(source))
        if os.path.abspath(target) != source:
            with open(source, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
        return [os.path.join(save_directory, name) for name in (IMAGE_PROCESSOR_FILE, PROCESSOR_FILE)]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load from a folder or Hub repo written by `save_pretrained`."""
        hub_kwargs = {
            k: kwargs[k]
            for k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if k in kwargs
        }
        image_config = _read_json(pretrained_model_name_or_path, IMAGE_PROCESSOR_FILE, hub_kwargs)
        processor_config = _read_json(pretrained_model_name_or_path, PROCESSOR_FILE, hub_kwargs)
        for key in ("auto_map", "image_processor_type", "processor_class"):
            image_config.pop(key, None)
        # AutoTokenizer also reads config.json (our custom model type): pass on the caller's trust decision.
        tokenizer = AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path, trust_remote_code=kwargs.get("trust_remote_code"), **hub_kwargs
        )
        max_caption_length = kwargs.get("max_caption_length", processor_config.get("max_caption_length", 64))
        return cls(ViTGPT2CaptionImageProcessor(**image_config), tokenizer, max_caption_length=max_caption_length)

    @classmethod
    def from_encoder_decoder_pretrained(cls, encoder_name_or_path, decoder_name_or_path, max_caption_length=64, **hub_kwargs):
        """A processor for a new captioner: the encoder's image preprocessing and the decoder's tokenizer.

        Adds a distinct padding token when the decoder's tokenizer has none (GPT-2 has none); the model's
        embeddings must then be resized to `len(processor.tokenizer)`.
        """
        image_processor = ViTGPT2CaptionImageProcessor.from_encoder_pretrained(encoder_name_or_path, **hub_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(decoder_name_or_path, **hub_kwargs)
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        return cls(image_processor, tokenizer, max_caption_length=max_caption_length)


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _read_json(name_or_path, filename, hub_kwargs):
    """A JSON file from a local folder or a Hub repo; {} when the repo has none."""
    subfolder = hub_kwargs.get("subfolder") or ""
    local = os.path.join(os.fspath(name_or_path), subfolder, filename)
    if os.path.isdir(os.fspath(name_or_path)):
        if not os.path.isfile(local):
            return {}
        path = local
    else:
        from transformers.utils import cached_file

        path = cached_file(
            name_or_path, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if path is None:
            return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path!r} is not valid JSON: {err}.") from err


ViTGPT2CaptionImageProcessor.register_for_auto_class("AutoImageProcessor")
ViTGPT2CaptionProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["ViTGPT2CaptionImageProcessor", "ViTGPT2CaptionProcessor"]
