"""Shared fixtures: a tiny byte-level tokenizer and tiny random captioners (hidden 32, 2 layers, 32 px)."""

import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CAPTIONS = [
    "a red circle on a grey background",
    "a small blue square to the left of a large green star",
    "two yellow triangles and a purple circle",
    "there is a white star in the centre",
    "an orange square above a black circle",
]


def make_tiny_tokenizer(with_pad=True):
    """A GPT-2 style byte-level BPE tokenizer with BOS = EOS = <|endoftext|> and a distinct <|pad|>.

    `with_pad=False` gives what GPT-2 checkpoints ship: no padding token at all.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|pad|>"] if with_pad else ["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(TINY_CAPTIONS * 4, trainer)
    pad = {"pad_token": "<|pad|>"} if with_pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", **pad)


def make_tiny_captioner(prefix_attention="causal", seed=0, **config_kwargs):
    from vitgpt2_caption import build_captioner

    torch.manual_seed(seed)
    config_kwargs.setdefault("projector_dropout", 0.0)
    model, processor = build_captioner(
        model_size="tiny", tokenizer=make_tiny_tokenizer(), prefix_attention=prefix_attention, **config_kwargs
    )
    return model.eval(), processor


def make_images(count, seed=0, size=(40, 30)):
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8)
        images.append(Image.fromarray(pixels.numpy()))
    return images


@pytest.fixture(params=[("causal", 1), ("bidirectional", 1), ("bidirectional", 2)],
                ids=["causal", "bidirectional", "bidirectional-pool2"])
def tiny_captioner(request):
    """Both prefix modes, and a pooled image prefix (4x4 patches -> 2x2)."""
    prefix_attention, prefix_pool_size = request.param
    return make_tiny_captioner(prefix_attention, prefix_pool_size=prefix_pool_size)


@pytest.fixture
def saved_captioner(tmp_path):
    model, processor = make_tiny_captioner()
    folder = tmp_path / "tiny-captioner"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, model, processor
