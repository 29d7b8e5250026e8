"""The processor: any image a user has becomes pixel values; captions are laid out so EOS is learned."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_images, make_tiny_captioner
from vitgpt2_caption import ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor


@pytest.fixture(scope="module")
def processor():
    return make_tiny_captioner()[1]


def image_in_mode(mode):
    rgb = make_images(1, size=(20, 12))[0]
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        assert image.mode == "I;16"
        return image
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_every_pil_mode_becomes_rgb_pixel_values(processor, mode):
    pixel_values = processor(images=[image_in_mode(mode)])["pixel_values"]
    assert pixel_values.shape == (1, 3, 32, 32) and pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()
    assert pixel_values.min() >= -1.0 - 1e-6 and pixel_values.max() <= 1.0 + 1e-6


def test_sixteen_bit_greyscale_keeps_its_brightness(processor):
    bright = Image.fromarray(np.full((8, 8), 60000, dtype=np.uint16))
    value = processor(images=[bright])["pixel_values"][0, 0, 0, 0].item()
    assert value == pytest.approx(60000 / 65535 * 2 - 1, abs=0.01)  # not clipped to white, not read as 0..255


def test_transparency_is_composited_on_white(processor):
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert torch.allclose(processor(images=[clear])["pixel_values"], torch.ones(1, 3, 32, 32))


def test_paths_arrays_tensors_and_tiny_images(processor, tmp_path):
    image = make_images(1, size=(33, 17))[0]
    path = tmp_path / "image.png"
    image.save(path)
    array = np.asarray(image)
    expected = processor(images=[image])["pixel_values"]
    for variant in (path, str(path), array, array.transpose(2, 0, 1), torch.from_numpy(array.copy()).permute(2, 0, 1),
                    array.astype(np.float32) / 255.0):
        torch.testing.assert_close(processor(images=[variant])["pixel_values"], expected, atol=1e-5, rtol=0)
    one_pixel = processor(images=[Image.new("RGB", (1, 1), (0, 0, 0))])["pixel_values"]
    assert one_pixel.shape == (1, 3, 32, 32) and torch.allclose(one_pixel, -torch.ones_like(one_pixel))


def test_caption_layout_teaches_eos_and_never_padding(processor):
    tok = processor.tokenizer
    batch = processor(text=["a red circle", "two small yellow triangles on a grey background"])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id)
    assert (ids[:, 0] == tok.bos_token_id).all() and (labels[:, 0] == -100).all()
    for row in range(2):
        length = int(mask[row].sum())
        assert ids[row, length - 1] == tok.eos_token_id and labels[row, length - 1] == tok.eos_token_id
        assert (ids[row, length:] == tok.pad_token_id).all() and (labels[row, length:] == -100).all()
        assert torch.equal(labels[row, 1:length], ids[row, 1:length])
    assert processor.batch_decode(ids) == ["a red circle", "two small yellow triangles on a grey background"]


def test_long_captions_are_truncated_but_keep_eos(processor):
    batch = processor(text=["a red circle " * 50], max_length=10)
    assert batch["input_ids"].shape == (1, 10)
    assert batch["input_ids"][0, -1] == processor.tokenizer.eos_token_id == batch["labels"][0, -1]


def test_processor_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = ViTGPT2CaptionProcessor.from_pretrained(tmp_path)
    images = make_images(2)
    text = ["a red circle", "a white star"]
    for key, value in processor(images=images, text=text).items():
        assert torch.equal(loaded(images=images, text=text)[key], value), key
    assert loaded.max_caption_length == processor.max_caption_length


# --- bad input: every error names the input and the problem ---
def test_missing_path(processor, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        processor(images=[missing])


def test_file_that_is_not_an_image(processor, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is text, not a JPEG")
    with pytest.raises(ValueError, match=r"notes\.jpg.*not an image"):
        processor(images=[notes])


def test_truncated_image(processor, tmp_path):
    full = tmp_path / "full.jpg"
    make_images(1, size=(64, 64))[0].save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg.*truncated"):
        processor(images=[cut])


def test_error_in_a_batch_names_the_index(processor, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Image 1 .*gone\.png"):
        processor(images=[make_images(1)[0], tmp_path / "gone.png"])


@pytest.mark.parametrize(
    "bad, message",
    [(np.zeros((6, 6, 5)), "channels"), ("", "not found"), (12, "Expected an image"), (np.zeros((0, 3)), "shape")],
)
def test_bad_image_objects(processor, bad, message):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message):
        processor(images=[bad])


@pytest.mark.parametrize("text, message", [([""], "Caption 0"), (["ok", None], "Caption 1"), ([], "non-empty")])
def test_bad_captions(processor, text, message):
    with pytest.raises(ValueError, match=message):
        processor(text=text)


def test_images_and_captions_must_pair(processor):
    with pytest.raises(ValueError, match="2 images and 1 captions"):
        processor(images=make_images(2), text=["a red circle"])


def test_tokenizer_without_distinct_pad_is_refused(processor):
    tok = processor.tokenizer
    original = tok.pad_token
    tok.pad_token = tok.eos_token
    try:
        with pytest.raises(ValueError, match="padding token distinct"):
            ViTGPT2CaptionProcessor(ViTGPT2CaptionImageProcessor(), tok)
    finally:
        tok.pad_token = original


def test_image_processor_settings_are_checked():
    with pytest.raises(ValueError, match="size"):
        ViTGPT2CaptionImageProcessor(size={"height": 0, "width": 4})
    with pytest.raises(ValueError, match="resample"):
        ViTGPT2CaptionImageProcessor(resample="sideways")
