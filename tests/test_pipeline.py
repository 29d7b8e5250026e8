"""pipeline("image-to-text"): options are honoured and bad inputs fail with the input named."""

import pytest
from transformers import pipeline

from conftest import make_images


@pytest.fixture
def captioner(saved_captioner):
    folder, model, processor = saved_captioner
    return pipeline("image-to-text", model=str(folder), trust_remote_code=True), model, processor


def test_pil_input_and_options(captioner):
    pipe, model, processor = captioner
    image = make_images(1)[0]
    out = pipe(image, max_new_tokens=3, generate_kwargs={"min_new_tokens": 3})
    assert len(out) == 1 and isinstance(out[0]["generated_text"], str)
    ids = model.generate(**processor(images=[image]), max_new_tokens=3, min_new_tokens=3)
    assert ids.shape[1] == 1 + 3
    assert out[0]["generated_text"] == processor.batch_decode(ids)[0]

    two = pipe(image, generate_kwargs={"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 3})
    assert len(two) == 2


def test_conflicting_and_unknown_options_are_refused(captioner):
    pipe = captioner[0]
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe(make_images(1)[0], max_new_tokens=3, generate_kwargs={"max_new_tokens": 4})
    with pytest.raises(TypeError, match="prompt"):
        pipe(make_images(1)[0], prompt="a photo of")


def test_missing_file(captioner, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        captioner[0](str(tmp_path / "missing.png"))


def test_not_an_image(captioner, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"\x00\x01 definitely not a png")
    with pytest.raises(ValueError, match=r"fake\.png.*not an image"):
        captioner[0](str(fake))


def test_truncated_image(captioner, tmp_path):
    full = tmp_path / "full.png"
    make_images(1, size=(64, 64))[0].save(full)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.png.*truncated"):
        captioner[0](str(cut))
