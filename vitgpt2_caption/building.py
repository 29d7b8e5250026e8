"""Build a new captioner (model + processor) from checkpoints, or at a named size with random weights.

Library code, not remote code: the training job, the benchmarks and the tests build models through here.
"""

import torch
from transformers import AutoConfig, AutoTokenizer, GPT2Config, GPT2LMHeadModel, ViTConfig

from .configuration_vitgpt2_caption import ViTGPT2CaptionConfig
from .modeling_vitgpt2_caption import ViTGPT2CaptionModel
from .processing_vitgpt2_caption import PAD_TOKEN, ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor

# Random-init shapes for when no checkpoint is given. `base` is ViT-B/16 at 224 and DistilGPT2's shape.
MODEL_SIZES = {
    "tiny": {
        "vision": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64),
        "text": dict(n_embd=32, n_layer=2, n_head=2, n_positions=256),
    },
    # `make demo`: trained from scratch on the synthetic default on 2 CPU cores. 112 px in 16 px patches is a
    # 7 x 7 grid whose patch centres sit on the synthetic object slots (0.22 / 0.5 / 0.78 of the side), so each
    # small shape lies inside one patch; the decoder is narrow because it reads all 50 image tokens at every layer.
    "demo": {
        "vision": dict(image_size=112, patch_size=16, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=256),
        "text": dict(n_embd=128, n_layer=3, n_head=4, n_positions=128),
    },
    "small": {
        "vision": dict(image_size=64, patch_size=8, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                       intermediate_size=768),
        "text": dict(n_embd=256, n_layer=4, n_head=4, n_positions=256),
    },
    "base": {"vision": dict(), "text": dict(n_layer=6)},
}


def sincos_position_embeddings(grid_size, dim):
    """MAE's fixed 2-D sine-cosine position table, shape (1, 1 + grid_size**2, dim), zeros for [CLS].

    Patches are in the ViT's row-major order. A quarter of the channels each hold sin(x), cos(x), sin(y),
    cos(y) at geometric frequencies, so nearby patches get similar codes from the first step.
    """
    if dim % 4:
        raise ValueError(f"Sine-cosine position embeddings need a width divisible by 4, got {dim}.")
    y, x = torch.meshgrid(torch.arange(grid_size, dtype=torch.float32), torch.arange(grid_size, dtype=torch.float32), indexing="ij")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    x_angles, y_angles = x.reshape(-1, 1) * frequencies, y.reshape(-1, 1) * frequencies
    table = torch.cat([x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), table])[None]


def init_vit_position_embeddings(vision_model):
    """Start a randomly initialised ViT's learned position embeddings at the sine-cosine table.

    A ViT trained from scratch first has to discover where its patches are; with random (std 0.02) position
    embeddings the demo encoder barely told shapes apart after 1,000 steps (shape accuracy 1% vs 31% in a
    probe). The embeddings stay trainable.
    """
    embeddings = vision_model.embeddings.position_embeddings
    config = vision_model.config
    grid_size = config.image_size // config.patch_size
    with torch.no_grad():
        embeddings.copy_(sincos_position_embeddings(grid_size, config.hidden_size).to(embeddings.dtype))
    return vision_model


def align_with_tokenizer(model, tokenizer, max_new_tokens=None):
    """Give the model the tokenizer's vocabulary size and BOS/EOS/PAD ids, for training and generate()."""
    if model.get_input_embeddings().num_embeddings != len(tokenizer):
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token_id = getattr(tokenizer, name)
        setattr(model.config, name, token_id)
        setattr(model.config.text_config, name, token_id)
        setattr(model.generation_config, name, token_id)
    if max_new_tokens is not None:
        model.generation_config.max_new_tokens = max_new_tokens
    return model


def build_captioner(
    encoder_name_or_path=None,
    decoder_name_or_path=None,
    model_size="base",
    tokenizer=None,
    max_caption_length=64,
    **config_kwargs,
):
    """A new (model, processor) pair.

    The encoder and decoder each come from a checkpoint (Hub name or local path) when given, else are built
    at `model_size` with random weights. Without a decoder checkpoint, `tokenizer` is required (for example
    the one `caption_tokenizer.train_caption_tokenizer` trains). The projector and [SEP] always start random.
    """
    if model_size not in MODEL_SIZES:
        raise ValueError(f"`model_size` must be one of {sorted(MODEL_SIZES)}, got {model_size!r}.")
    shapes = MODEL_SIZES[model_size]
    if decoder_name_or_path is not None:
        text_config = AutoConfig.from_pretrained(decoder_name_or_path)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(decoder_name_or_path)
    elif tokenizer is None:
        raise ValueError("Without `decoder_name_or_path`, pass the `tokenizer` the new decoder will use.")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if decoder_name_or_path is None:
        special_ids = {name: getattr(tokenizer, name) for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
        text_config = GPT2Config(vocab_size=len(tokenizer), **special_ids, **shapes["text"])
    if encoder_name_or_path is not None:
        vision_config = AutoConfig.from_pretrained(encoder_name_or_path)
        image_processor = ViTGPT2CaptionImageProcessor.from_encoder_pretrained(encoder_name_or_path)
    else:
        vision_config = ViTConfig(**shapes["vision"])
        size = vision_config.image_size
        image_processor = ViTGPT2CaptionImageProcessor(size={"height": size, "width": size})

    if encoder_name_or_path is not None and decoder_name_or_path is not None:
        model = ViTGPT2CaptionModel.from_encoder_decoder_pretrained(
            encoder_name_or_path, decoder_name_or_path, **config_kwargs
        )
    else:
        model = ViTGPT2CaptionModel(
            ViTGPT2CaptionConfig(vision_config=vision_config, text_config=text_config, **config_kwargs)
        )
        if encoder_name_or_path is None:
            init_vit_position_embeddings(model.vision_model)
        else:
            model.vision_model = type(model.vision_model).from_pretrained(encoder_name_or_path, add_pooling_layer=False)
            model.config.vision_config = model.vision_model.config
        if decoder_name_or_path is not None:
            model.language_model = GPT2LMHeadModel.from_pretrained(decoder_name_or_path)
            model.config.text_config = model.language_model.config

    processor = ViTGPT2CaptionProcessor(image_processor, tokenizer, max_caption_length=max_caption_length)
    align_with_tokenizer(model, tokenizer, max_new_tokens=max_caption_length)
    return model, processor
