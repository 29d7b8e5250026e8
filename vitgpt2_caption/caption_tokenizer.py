"""Tokenizers for the caption decoder.

Two paths, one contract: the decoder needs a BOS to start generation from, an EOS it learns to emit,
and a pad token whose id is NOT a real token (padding with EOS would hide EOS from the loss mask and
the model would never learn to stop).

- `train_caption_tokenizer` trains a small GPT-2-style byte-level BPE on the captions themselves
  (the synthetic default: a 50k vocabulary for a few hundred words would be mostly dead embeddings).
- `prepare_decoder_tokenizer` takes a real GPT-2 tokenizer and adds the pad token it lacks.

Like GPT-2, the tokenizer does not insert BOS/EOS itself; the processor adds them around each caption.
"""

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


# GPT-2's single special token serves as BOS and EOS (and UNK, which byte-level BPE never needs).
ENDOFTEXT_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def train_caption_tokenizer(
    captions: Iterable[str],
    vocab_size: int = 1000,
    min_frequency: int = 2,
    model_max_length: int = 64,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE tokenizer on `captions`.

    Special tokens: `<|endoftext|>` (id 0) is bos/eos/unk, `<|pad|>` (id 1) is pad; every other id is a
    real token. The result round-trips through `save_pretrained` / `AutoTokenizer.from_pretrained`.
    """
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False is GPT-2's default: " red" and "red" are different tokens, and the first
    # word of a caption is seen without a space, as it will be at inference time.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT_TOKEN, PAD_TOKEN],
        # The full byte alphabet keeps every string encodable, including characters unseen in training.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_non_empty(captions), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=ENDOFTEXT_TOKEN,
        eos_token=ENDOFTEXT_TOKEN,
        unk_token=ENDOFTEXT_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
    )


def prepare_decoder_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a GPT-2 tokenizer the special tokens the caption model needs; returns the same tokenizer.

    GPT-2 ships without a pad token, and the common workaround (pad = eos) makes padding
    indistinguishable from the EOS the model must learn. A dedicated `<|pad|>` token is added instead;
    the caller must then `model.resize_token_embeddings(len(tokenizer))`.
    """
    if tokenizer.eos_token is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token; the caption decoder needs one to stop.")
    if tokenizer.bos_token is None:
        # GPT-2 semantics: generation starts from the end-of-text token.
        tokenizer.bos_token = tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _non_empty(captions: Iterable[str]) -> Iterable[str]:
    for caption in captions:
        if isinstance(caption, str) and caption.strip():
            yield caption
