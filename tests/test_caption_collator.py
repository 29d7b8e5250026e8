"""CaptionCollator (one caption per image per epoch, all of them over the epochs) and the caption tokenizers."""

import pickle
from collections import defaultdict

import datasets
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from vitgpt2_caption import ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor
from vitgpt2_caption.caption_collator import CaptionCollator
from vitgpt2_caption.caption_tokenizer import PAD_TOKEN, prepare_decoder_tokenizer, train_caption_tokenizer
from vitgpt2_caption.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def dataset():
    return generate_synthetic_dataset(num_train=12, num_validation=0, num_test=0, seed=0, image_size=32)["train"]


@pytest.fixture(scope="module")
def processor(dataset):
    tokenizer = train_caption_tokenizer([c for captions in dataset["captions"] for c in captions], vocab_size=400)
    return ViTGPT2CaptionProcessor(
        image_processor=ViTGPT2CaptionImageProcessor(size={"height": 16, "width": 16}), tokenizer=tokenizer
    )


def _captions_of_epoch(collator, dataset, epoch, batch_size=5, num_workers=0):
    """{image_id: [decoded captions]} for one epoch through a real DataLoader."""
    collator.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)
    used = defaultdict(list)
    for batch in loader:
        for image_id, caption in zip(batch["image_ids"], collator.processor.batch_decode(batch["input_ids"])):
            used[image_id].append(caption)
    return used


def test_batch_holds_the_model_inputs(dataset, processor):
    batch = CaptionCollator(processor, max_length=32)([dataset[i] for i in range(4)])
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "labels"}
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    tokenizer = processor.tokenizer
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        length = int(mask.sum())
        assert ids[0] == tokenizer.bos_token_id and ids[length - 1] == tokenizer.eos_token_id
        assert (ids[length:] == tokenizer.pad_token_id).all()
        assert labels[0] == -100 and labels[length - 1] == tokenizer.eos_token_id and (labels[length:] == -100).all()


def test_long_captions_are_truncated_and_keep_eos(dataset, processor):
    batch = CaptionCollator(processor, max_length=6)([dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[1] == 6
    assert (batch["labels"][:, -1] == processor.tokenizer.eos_token_id).all()


def test_every_caption_is_used_once_per_cycle_one_per_image_per_epoch(dataset, processor):
    collator = CaptionCollator(processor, max_length=64, seed=3, return_image_ids=True)
    references = dict(zip(dataset["image_id"], dataset["captions"]))
    num_epochs = 2 * max(len(captions) for captions in references.values())
    used = defaultdict(list)
    for epoch in range(num_epochs):
        for image_id, captions in _captions_of_epoch(collator, dataset, epoch).items():
            assert len(captions) == 1  # one caption per image per epoch
            used[image_id] += captions
    assert used.keys() == references.keys()
    for image_id, captions in references.items():
        n = len(captions)
        # Each block of n consecutive epochs uses every reference exactly once.
        for start in range(0, num_epochs - n + 1, n):
            assert sorted(used[image_id][start : start + n]) == sorted(captions)
    # ...and the order is not simply the references' order.
    assert any(used[image_id][: len(c)] != c for image_id, c in references.items())


def test_choice_is_reproducible_and_independent_of_batching_and_workers(dataset, processor):
    collator = CaptionCollator(processor, seed=7, return_image_ids=True)
    reference = _captions_of_epoch(collator, dataset, epoch=4, batch_size=5)
    again = _captions_of_epoch(
        CaptionCollator(processor, seed=7, return_image_ids=True), dataset.shuffle(seed=1), epoch=4, batch_size=3
    )
    assert again == reference
    in_workers = _captions_of_epoch(collator, dataset, epoch=4, batch_size=4, num_workers=2)
    assert in_workers == reference
    other_seed = _captions_of_epoch(CaptionCollator(processor, seed=8, return_image_ids=True), dataset, epoch=4)
    assert other_seed != reference


def test_collator_pickles_and_accepts_undecoded_images_and_paths(dataset, processor, tmp_path):
    collator = pickle.loads(pickle.dumps(CaptionCollator(processor, seed=1)))
    rows = [dataset[i] for i in range(3)]
    expected = collator(rows)
    undecoded = dataset.cast_column("image", datasets.Image(decode=False))
    assert undecoded[0]["image"].keys() == {"path", "bytes"}
    from_dicts = collator([undecoded[i] for i in range(3)])
    paths = []
    for index, row in enumerate(rows):
        row["image"].save(tmp_path / f"{index}.png")
        paths.append({**row, "image": str(tmp_path / f"{index}.png")})
    from_paths = collator(paths)
    for batch in (from_dicts, from_paths):
        for key in expected:
            torch.testing.assert_close(batch[key], expected[key])


def test_trained_tokenizer_special_tokens_and_round_trip(tmp_path):
    tokenizer = train_caption_tokenizer(
        ["a red circle on a grey background", "a small blue square"] * 10, vocab_size=300
    )
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token == PAD_TOKEN and tokenizer.pad_token_id != tokenizer.eos_token_id
    # The pad id is no real token: no text encodes to it.
    assert tokenizer.pad_token_id not in tokenizer("a red circle <|pad|>", add_special_tokens=False)["input_ids"][:-1]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "a small red circle, unseen wörds!"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (0, 0, 1)


def _gpt2_like_tokenizer():
    """Byte-level BPE with GPT-2's special tokens only: BOS = EOS = UNK = <|endoftext|>, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(["a red circle"] * 5, trainer)
    endoftext = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=endoftext, eos_token=endoftext, unk_token=endoftext
    )


@pytest.mark.parametrize("pad", [None, "eos"])
def test_prepare_decoder_tokenizer_adds_a_distinct_pad_token(pad):
    tokenizer = _gpt2_like_tokenizer()
    if pad == "eos":  # the common workaround we undo: padding with EOS hides EOS from the loss
        tokenizer.pad_token = tokenizer.eos_token
    vocab_size = len(tokenizer)
    prepared = prepare_decoder_tokenizer(tokenizer)
    assert prepared is tokenizer and prepared.pad_token == PAD_TOKEN
    assert prepared.pad_token_id == vocab_size == len(prepared) - 1  # a new id: resize the embeddings
    assert prepared.pad_token_id not in (prepared.eos_token_id, prepared.bos_token_id)
    assert prepare_decoder_tokenizer(prepared).pad_token_id == vocab_size  # idempotent
    processor = ViTGPT2CaptionProcessor(image_processor=ViTGPT2CaptionImageProcessor(), tokenizer=prepared)
    assert processor(text=["a red circle", "a"])["input_ids"][1, -1] == vocab_size
