"""Configuration of the ViT -> projector -> [SEP] -> GPT-2 captioner.

Remote code: this file is copied into every saved model folder, so it imports only from
`transformers` and never from the rest of the `vitgpt2_caption` package.
"""

from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig

VISION_MODEL_TYPES = ("vit", "deit")
TEXT_MODEL_TYPES = ("gpt2",)
PREFIX_ATTENTION_MODES = ("causal", "bidirectional")

# Extra tokens each vision encoder puts in front of the patches: ViT has [CLS], DeiT has [CLS] + [DIST].
_SPECIAL_VISION_TOKENS = {"vit": 1, "deit": 2}


def _sub_config(value, field, allowed_types, default_type):
    """Turn a dict / config object / None into a config of one of `allowed_types`."""
    if value is None:
        return CONFIG_MAPPING[default_type]()
    if isinstance(value, dict):
        model_type = value.get("model_type", default_type)
        if model_type not in allowed_types:
            raise ValueError(f"`{field}.model_type` must be one of {allowed_types}, got {model_type!r}.")
        value = {k: v for k, v in value.items() if k != "model_type"}
        return CONFIG_MAPPING[model_type](**value)
    if isinstance(value, PretrainedConfig):
        if value.model_type not in allowed_types:
            raise ValueError(f"`{field}` must be a config of type {allowed_types}, got {value.model_type!r}.")
        return value
    raise ValueError(f"`{field}` must be a dict or a PretrainedConfig, got {type(value).__name__}.")


class ViTGPT2CaptionConfig(PretrainedConfig):
    r"""
    Configuration for [`ViTGPT2CaptionModel`].

    Args:
        vision_config (`dict` or `ViTConfig`/`DeiTConfig`, *optional*):
            The image encoder. Defaults to ViT-B/16 at 224 px.
        text_config (`dict` or `GPT2Config`, *optional*):
            The caption decoder. Defaults to DistilGPT2's shape (6 layers, width 768).
        projector_hidden_size (`int`, *optional*):
            Width of the projector's hidden layer. Defaults to twice the decoder width (the original design).
        projector_dropout (`float`, *optional*, defaults to 0.5):
            Dropout between the projector's two linear layers (0.5 in the original design).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the projector's two linear layers.
        prefix_attention (`str`, *optional*, defaults to `"causal"`):
            `"causal"`: GPT-2's causal mask over prefix and caption (the original design).
            `"bidirectional"`: image-prefix positions attend to each other (as in GIT); the caption stays causal.
        prefix_pool_size (`int`, *optional*, defaults to 1):
            Average-pool the encoder's patch grid in `k x k` windows before the projector (its special tokens are
            kept). 1 keeps every patch (the original design); 2 turns ViT-B/16's 196 patches into 49, so the
            decoder reads a 4x shorter image prefix (faster training and generation, a coarser image).
    """

    model_type = "vitgpt2_caption"
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projector_hidden_size=None,
        projector_dropout=0.5,
        projector_hidden_act="gelu",
        prefix_attention="causal",
        prefix_pool_size=1,
        initializer_range=0.02,
        **kwargs,
    ):
        self.vision_config = _sub_config(vision_config, "vision_config", VISION_MODEL_TYPES, "vit")
        if text_config is None:
            # DistilGPT2's shape: GPT-2 small with 6 layers.
            text_config = {"model_type": "gpt2", "n_layer": 6}
        self.text_config = _sub_config(text_config, "text_config", TEXT_MODEL_TYPES, "gpt2")

        if projector_hidden_size is None:
            projector_hidden_size = 2 * self.text_config.hidden_size
        if not isinstance(projector_hidden_size, int) or projector_hidden_size <= 0:
            raise ValueError(f"`projector_hidden_size` must be a positive int, got {projector_hidden_size!r}.")
        if not 0.0 <= float(projector_dropout) < 1.0:
            raise ValueError(f"`projector_dropout` must be in [0, 1), got {projector_dropout!r}.")
        if prefix_attention not in PREFIX_ATTENTION_MODES:
            raise ValueError(f"`prefix_attention` must be one of {PREFIX_ATTENTION_MODES}, got {prefix_attention!r}.")
        if isinstance(prefix_pool_size, bool) or not isinstance(prefix_pool_size, int) or prefix_pool_size < 1:
            raise ValueError(f"`prefix_pool_size` must be an int >= 1, got {prefix_pool_size!r}.")
        for field, cfg in (("vision_config", self.vision_config), ("text_config", self.text_config)):
            if cfg.hidden_size <= 0:
                raise ValueError(f"`{field}.hidden_size` must be positive, got {cfg.hidden_size}.")

        self.projector_hidden_size = projector_hidden_size
        self.projector_dropout = float(projector_dropout)
        self.projector_hidden_act = projector_hidden_act
        self.prefix_attention = prefix_attention
        self.prefix_pool_size = prefix_pool_size
        self.initializer_range = initializer_range

        # The decoder needs room for the image prefix, [SEP], BOS and at least one caption token.
        if self.text_config.n_positions < self.num_prefix_tokens + 2:
            raise ValueError(
                f"`text_config.n_positions` ({self.text_config.n_positions}) is too small for "
                f"{self.num_prefix_tokens} prefix positions plus a caption."
            )

        # Generation starts from the decoder's BOS and stops at its EOS; `generate` reads these from here.
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if kwargs.get(name) is None and getattr(self.text_config, name, None) is not None:
                kwargs[name] = getattr(self.text_config, name)
        kwargs.setdefault("tie_word_embeddings", getattr(self.text_config, "tie_word_embeddings", True))
        super().__init__(**kwargs)

    @property
    def num_image_tokens(self):
        """Image positions in the prefix: the (pooled) patches plus the encoder's special tokens."""
        vision = self.vision_config
        pooled_side = -(-(vision.image_size // vision.patch_size) // self.prefix_pool_size)  # ceil division
        return pooled_side**2 + _SPECIAL_VISION_TOKENS[vision.model_type]

    @property
    def num_prefix_tokens(self):
        """Decoder positions before the caption: the projected image tokens and the learned [SEP]."""
        return self.num_image_tokens + 1


ViTGPT2CaptionConfig.register_for_auto_class("AutoConfig")

__all__ = ["ViTGPT2CaptionConfig"]
