"""A saved folder is complete: it loads and captions in a fresh process that cannot import this package."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import make_images

pytestmark = pytest.mark.compat

# Runs under `python -I` in another working directory, with the package made unimportable.
FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    sys.modules["vitgpt2_caption"] = None  # any import of the package now fails
    try:
        import vitgpt2_caption
    except ImportError:
        pass
    else:
        raise SystemExit("vitgpt2_caption is importable")
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor,
                              GenerationConfig, pipeline)

    folder, pixels_file, image_file, image_file_2 = sys.argv[1:5]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = torch.load(pixels_file)
    result = {"config_class": type(config).__name__, "processor_class": type(processor).__name__}
    for auto in (AutoModel, AutoModelForImageTextToText):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        kwargs = dict(max_new_tokens=6, min_new_tokens=6)
        result[auto.__name__] = {
            "class": type(model).__name__,
            "module": type(model).__module__,
            "greedy": model.generate(pixel_values=pixel_values, **kwargs).tolist(),
            "beam": model.generate(pixel_values=pixel_values, num_beams=3, num_return_sequences=2, **kwargs).tolist(),
        }
    captioner = pipeline("image-to-text", model=folder, trust_remote_code=True)
    result["pipeline"] = captioner(image_file, max_new_tokens=6, generate_kwargs={"min_new_tokens": 6})
    result["pipeline_beam_batch"] = captioner(
        [image_file, image_file_2], batch_size=2, max_new_tokens=6, generate_kwargs={"min_new_tokens": 6, "num_beams": 3}
    )
    print(json.dumps(result))
    """
)


def run_fresh(folder, pixel_values, image_files, tmp_path):
    pixels_file = tmp_path / "pixels.pt"
    torch.save(pixel_values, pixels_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, str(folder), str(pixels_file), *map(str, image_files)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_round_trip_in_fresh_process(saved_captioner, tmp_path):
    folder, model, processor = saved_captioner
    files = set(os.listdir(folder))
    for name in ("model.safetensors", "config.json", "generation_config.json", "preprocessor_config.json",
                 "processor_config.json", "tokenizer.json", "tokenizer_config.json", "configuration_vitgpt2_caption.py",
                 "modeling_vitgpt2_caption.py", "processing_vitgpt2_caption.py", "pipeline_vitgpt2_caption.py"):
        assert name in files, f"{name} missing from the saved folder"
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    assert "image-to-text" in config["custom_pipelines"]
    assert "AutoProcessor" in json.loads((folder / "processor_config.json").read_text())["auto_map"]

    images = make_images(2)
    image_files = [tmp_path / "photo0.png", tmp_path / "photo1.jpg"]
    for image, path in zip(images, image_files):
        image.save(path)
    pixel_values = processor(images=images)["pixel_values"]
    kwargs = dict(max_new_tokens=6, min_new_tokens=6)
    greedy = model.generate(pixel_values=pixel_values, **kwargs).tolist()
    beam = model.generate(pixel_values=pixel_values, num_beams=3, num_return_sequences=2, **kwargs).tolist()

    fresh = run_fresh(folder, pixel_values, image_files, tmp_path)
    assert fresh["config_class"] == "ViTGPT2CaptionConfig"
    assert fresh["processor_class"] == "ViTGPT2CaptionProcessor"
    for auto in ("AutoModel", "AutoModelForImageTextToText"):
        assert fresh[auto]["class"] == "ViTGPT2CaptionModel"
        assert fresh[auto]["module"].startswith("transformers_modules")
        assert fresh[auto]["greedy"] == greedy
        assert fresh[auto]["beam"] == beam

    # The pipeline gives what processor + generate give, from files, one image or a batch, greedy or beam.
    def caption(paths, **generate_kwargs):
        return processor.batch_decode(model.generate(**processor(images=paths), **kwargs, **generate_kwargs))

    expected_greedy = caption(image_files[:1])[0]
    assert expected_greedy
    assert fresh["pipeline"] == [{"generated_text": expected_greedy}]
    assert fresh["pipeline_beam_batch"] == [[{"generated_text": text}] for text in caption(image_files, num_beams=3)]
