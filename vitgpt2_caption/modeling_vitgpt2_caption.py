"""ViT encoder -> projector -> learned [SEP] -> GPT-2 decoder, an image captioner.

The decoder reads `[image prefix, SEP, BOS, caption..., EOS]` as one sequence of embeddings:

    pixel_values (B, 3, H, W)
      -> vision_model.last_hidden_state          (B, P, Dv)   P = patches + [CLS] (+ [DIST] for DeiT)
      -> optional k x k average pooling of the patch grid (config.prefix_pool_size; 1 = off)
      -> projector: Linear -> GELU -> Dropout -> Linear  (B, P, Dt)
      -> append the learned [SEP]                 (B, P + 1, Dt)
      -> concat caption token embeddings          (B, P + 1 + L, Dt)
      -> GPT-2 on inputs_embeds, logits kept for the L caption positions only

Remote code: this file is copied into every saved model folder. It imports from `transformers`, `torch`
and its sibling remote-code files only.
"""

import inspect
import os
import shutil

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, GenerationMixin, GPT2LMHeadModel, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.models.deit.modeling_deit import DeiTModel
from transformers.models.vit.modeling_vit import ViTModel

from .configuration_vitgpt2_caption import ViTGPT2CaptionConfig

_VISION_MODEL_CLASSES = {"vit": ViTModel, "deit": DeiTModel}


class PrefixSharingCacheLayer(DynamicLayer):
    """A `DynamicLayer` for generate(): appends into spare capacity, and beam search skips the shared image prefix.

    `DynamicLayer` concatenates every new position onto the whole cache, and beam search then gathers the whole
    cache again for the beams it keeps: two full copies of the ~200-position image prefix per layer per step,
    which were ~28% of a beam-3 generate() on CPU. Here the keys and values live in a preallocated buffer that
    grows geometrically (`self.keys` is a view of it), and after the prefix is repeated per beam the leading
    `shared_length` positions are identical within each group of `shared_group` rows, so a reorder that keeps
    every beam within its image's group only moves the positions after them. Same values as `DynamicLayer`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._key_buffer = self._value_buffer = None
        self.shared_length, self.shared_group = 0, 1

    def _owns_current_states(self):
        # Other code (the Cache base class, a user) may replace `self.keys` with a tensor of its own.
        buffer = self._key_buffer
        return (
            buffer is not None
            and self.keys.data_ptr() == buffer.data_ptr()
            and self.keys.shape[:2] == buffer.shape[:2]
            and self.keys.shape[3:] == buffer.shape[3:]
        )

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        new_length = length + key_states.shape[-2]
        if length == 0 or not self._owns_current_states() or new_length > self._key_buffer.shape[-2]:
            capacity = self._capacity_for(new_length)
            self._key_buffer = self._grown(self.keys, key_states, length, capacity)
            self._value_buffer = self._grown(self.values, value_states, length, capacity)
        self._key_buffer[:, :, length:new_length] = key_states
        self._value_buffer[:, :, length:new_length] = value_states
        self.keys = self._key_buffer[:, :, :new_length]
        self.values = self._value_buffer[:, :, :new_length]
        return self.keys, self.values

    @staticmethod
    def _capacity_for(length):
        # Room for a caption after the prefix, then geometric growth: a handful of reallocations per call.
        return length + max(32, length // 2)

    @staticmethod
    def _grown(states, new_states, length, capacity):
        batch, heads, _, head_dim = new_states.shape
        buffer = new_states.new_empty(batch, heads, capacity, head_dim)
        if length > 0:
            buffer[:, :, :length] = states[:, :, :length]
        return buffer

    def batch_repeat_interleave(self, repeats):
        length = self.get_seq_length()
        if length == 0 or repeats == 1:
            return
        # Repeat straight into a buffer with room for the caption: one copy of the prefix per beam, not two.
        capacity = self._capacity_for(length)

        def repeated(states):
            batch, heads, _, head_dim = states.shape
            buffer = states.new_empty(batch * repeats, heads, capacity, head_dim)
            grouped = buffer.view(batch, repeats, heads, capacity, head_dim)
            for copy in range(repeats):  # one plain copy per beam: ~5x faster on CPU than a broadcasting one
                grouped[:, copy, :, :length].copy_(states[:, :, :length])
            return buffer

        self._key_buffer, self._value_buffer = repeated(self.keys), repeated(self.values)
        self.keys, self.values = self._key_buffer[:, :, :length], self._value_buffer[:, :, :length]
        self.shared_length, self.shared_group = length, repeats

    def batch_select_indices(self, indices):
        super().batch_select_indices(indices)
        self.shared_length, self.shared_group = 0, 1

    def crop(self, tokens_to_remove):
        super().crop(tokens_to_remove)
        self.shared_length = min(self.shared_length, self.get_seq_length())

    def reset(self):
        super().reset()
        self._key_buffer = self._value_buffer = None
        self.shared_length, self.shared_group = 0, 1

    def reorder_cache(self, beam_idx, within_groups=False):
        """Keep the rows `beam_idx` chose. `within_groups`: the caller checked that every row stays in its group."""
        if self.get_seq_length() == 0:
            return
        index = beam_idx.to(self.keys.device)
        start = self.shared_length if within_groups else 0  # 0 whenever the rows share nothing
        if start == 0:
            # Advanced indexing, not the base class's index_select: ~20x faster on CPU for these shapes.
            self.keys, self.values = self.keys[index], self.values[index]
            self.shared_length, self.shared_group = 0, 1
            return
        for states in (self.keys, self.values):
            tail = states[:, :, start:]
            tail.copy_(tail[index])  # the gather materialises first, so overwriting in place is safe

    def stays_within_groups(self, beam_idx):
        rows = torch.arange(beam_idx.shape[0], device=beam_idx.device)
        return bool((beam_idx // self.shared_group == rows // self.shared_group).all())


class ViTGPT2CaptionProjector(nn.Module):
    """Maps vision features into the decoder's embedding space (Linear up, GELU, Dropout, Linear down)."""

    def __init__(self, config: ViTGPT2CaptionConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.projector_hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.dropout = nn.Dropout(config.projector_dropout)
        self.linear_2 = nn.Linear(config.projector_hidden_size, config.text_config.hidden_size)

    def forward(self, image_features):
        return self.linear_2(self.dropout(self.act(self.linear_1(image_features))))


class ViTGPT2CaptionPreTrainedModel(PreTrainedModel):
    config_class = ViTGPT2CaptionConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ViTLayer", "DeiTLayer", "GPT2Block"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, ViTGPT2CaptionModel):
            # A bare nn.Parameter: transformers v5 would otherwise re-initialise it on every load.
            nn.init.normal_(module.sep_embedding, mean=0.0, std=std)


class ViTGPT2CaptionModel(ViTGPT2CaptionPreTrainedModel, GenerationMixin):
    def __init__(self, config: ViTGPT2CaptionConfig):
        super().__init__(config)
        vision_class = _VISION_MODEL_CLASSES[config.vision_config.model_type]
        # No pooler: it is never used, and a weight without gradient breaks DDP.
        self.vision_model = vision_class(config.vision_config, add_pooling_layer=False)
        self.projector = ViTGPT2CaptionProjector(config)
        self.sep_embedding = nn.Parameter(torch.zeros(1, 1, config.text_config.hidden_size))
        self.language_model = GPT2LMHeadModel(config.text_config)
        self.post_init()

    # --- embeddings: delegate to the decoder so resize_token_embeddings and weight tying work ---
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        self.language_model.set_output_embeddings(new_embeddings)

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path,
        decoder_pretrained_model_name_or_path,
        encoder_kwargs=None,
        decoder_kwargs=None,
        **config_kwargs,
    ):
        """Build a captioner from a ViT/DeiT checkpoint and a GPT-2/DistilGPT2 checkpoint (Hub name or local path).

        The projector and [SEP] start random; `config_kwargs` go to [`ViTGPT2CaptionConfig`].
        """
        encoder_kwargs, decoder_kwargs = dict(encoder_kwargs or {}), dict(decoder_kwargs or {})
        vision_config = AutoConfig.from_pretrained(encoder_pretrained_model_name_or_path, **encoder_kwargs)
        text_config = AutoConfig.from_pretrained(decoder_pretrained_model_name_or_path, **decoder_kwargs)
        # Validates both model types before any weights are read.
        config = cls.config_class(vision_config=vision_config, text_config=text_config, **config_kwargs)

        vision_class = _VISION_MODEL_CLASSES[vision_config.model_type]
        vision_model = vision_class.from_pretrained(
            encoder_pretrained_model_name_or_path, add_pooling_layer=False, **encoder_kwargs
        )
        language_model = GPT2LMHeadModel.from_pretrained(decoder_pretrained_model_name_or_path, **decoder_kwargs)

        model = cls(config)
        model.vision_model = vision_model
        model.language_model = language_model
        # The loaded sub-models carry their own (identical) configs; keep one source of truth.
        model.config.vision_config = vision_model.config
        model.config.text_config = language_model.config
        return model

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False):
        """Projected image tokens, shape (B, P, Dt), in the decoder's embedding space (no [SEP])."""
        pixel_values = pixel_values.to(dtype=self.projector.linear_1.weight.dtype)
        # A frozen encoder needs no autograd graph: skipping it saves the encoder's activations.
        encoder_trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_model.parameters())
        with torch.set_grad_enabled(encoder_trains):
            vision_outputs = self.vision_model(
                pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding
            )
        return self.project_image_features(vision_outputs.last_hidden_state, pixel_values.shape[-2:])

    def project_image_features(self, encoder_hidden_states, image_size=None):
        """Encoder outputs (B, P, Dv) -> pooled (`config.prefix_pool_size`) and projected image tokens (B, P', Dt).

        `image_size` (height, width) of the encoder's input locates the patch grid; it defaults to the
        configured size. Split out of `get_image_features` so cached encoder outputs take the same path.
        """
        pool = self.config.prefix_pool_size
        if pool > 1:
            encoder_hidden_states = self._pool_patch_grid(encoder_hidden_states, image_size, pool)
        return self.projector(encoder_hidden_states)

    def _pool_patch_grid(self, hidden_states, image_size, pool):
        vision = self.config.vision_config
        patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
        height, width = image_size if image_size is not None else (vision.image_size, vision.image_size)
        grid_height, grid_width = int(height) // patch, int(width) // patch
        num_special = hidden_states.shape[1] - grid_height * grid_width
        if num_special < 0:
            raise ValueError(
                f"Encoder output has {hidden_states.shape[1]} positions, fewer than the {grid_height}x{grid_width} "
                f"patches of a {height}x{width} image; pass the image size the encoder saw."
            )
        special, patches = hidden_states[:, :num_special], hidden_states[:, num_special:]
        batch_size, _, width_dim = patches.shape
        grid = patches.transpose(1, 2).reshape(batch_size, width_dim, grid_height, grid_width)
        # ceil_mode: a grid that is not a multiple of `pool` keeps its last row/column (averaged over fewer).
        pooled = F.avg_pool2d(grid, kernel_size=pool, stride=pool, ceil_mode=True)
        return torch.cat([special, pooled.flatten(2).transpose(1, 2)], dim=1)

    def _prefix_bidirectional_mask(self, key_padding_mask, num_prefix, query_length, dtype):
        """Additive 4D mask (B, 1, Q, K): causal, except that prefix positions see the whole prefix (GIT-style)."""
        key_length = key_padding_mask.shape[1]
        device = key_padding_mask.device
        keys = torch.arange(key_length, device=device)
        queries = torch.arange(key_length - query_length, key_length, device=device)
        causal = keys[None, :] <= queries[:, None]  # (Q, K)
        within_prefix = (queries[:, None] < num_prefix) & (keys[None, :] < num_prefix)
        allowed = (causal | within_prefix)[None, None] & key_padding_mask[:, None, None, :].bool()
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        image_embeds=None,
        attention_mask=None,
        labels=None,
        inputs_embeds=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`): `[BOS, caption..., EOS, pad...]` from the processor.
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`): the images; omit once the image prefix is
                in the decoder's cache.
            image_embeds (`torch.FloatTensor` of shape `(B, P, Dt)`): precomputed `get_image_features` output,
                instead of `pixel_values`.
            attention_mask (`torch.LongTensor` of shape `(B, L)`): the caption mask; the image prefix is always
                attended to and is prepended here.
            labels (`torch.LongTensor` of shape `(B, L)`): `input_ids` with -100 on BOS and padding. The loss is
                the mean next-token cross-entropy over caption tokens and EOS.

        `kwargs` carries the decoder cache under whichever name this transformers version uses
        (`cache` or `past_key_values`); it is passed through unchanged.
        """
        # Older generate() loops pass text-only positions; GPT-2 derives the right ones (image prefix
        # included) from its cache length, so ours would only be wrong.
        kwargs.pop("cache_position", None)
        kwargs.pop("position_ids", None)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        # Set by prepare_inputs_for_generation only (see there): the rows come in groups of `image_repeats`
        # identical copies (beams / num_return_sequences) and `image_embeds` holds one row per group.
        image_repeats = kwargs.pop("image_repeats", 1)

        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("ViTGPT2CaptionModel.forward needs `input_ids` or `inputs_embeds`.")
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if image_repeats > 1:
            # Prefill once per image: the copies are identical, so their decoder work is too. Keep one row per
            # group here, and repeat the cache and the logits after the decoder (beam 3: a third of the prefill).
            inputs_embeds = inputs_embeds[::image_repeats]
            attention_mask = attention_mask[::image_repeats] if attention_mask is not None else None
        batch_size, text_length = inputs_embeds.shape[:2]

        if pixel_values is not None:
            if image_embeds is not None:
                raise ValueError("Pass either `pixel_values` or `image_embeds`, not both.")
            image_embeds = self.get_image_features(pixel_values)
        num_prefix = 0
        if image_embeds is not None:
            if image_embeds.shape[0] != batch_size:
                raise ValueError(
                    f"Got {image_embeds.shape[0]} images for {batch_size} captions; they must match one to one."
                )
            sep = self.sep_embedding.to(image_embeds.dtype).expand(batch_size, -1, -1)
            prefix = torch.cat([image_embeds.to(inputs_embeds.dtype), sep.to(inputs_embeds.dtype)], dim=1)
            inputs_embeds = torch.cat([prefix, inputs_embeds], dim=1)  # (B, P + 1 + L, Dt)
            num_prefix = prefix.shape[1]

        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past_length = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        total_length = past_length + inputs_embeds.shape[1]
        if attention_mask is not None:
            # The caller's mask covers the caption only; the image prefix (new or cached) is always visible.
            missing = total_length - attention_mask.shape[1]
            if missing < 0:
                raise ValueError(
                    f"`attention_mask` has {attention_mask.shape[1]} positions but the sequence has {total_length}."
                )
            attention_mask = torch.cat([attention_mask.new_ones(batch_size, missing), attention_mask], dim=1)
        if self.config.prefix_attention == "bidirectional" and num_prefix > 0:
            if "flash" in (self.config.text_config._attn_implementation or ""):
                raise ValueError("prefix_attention='bidirectional' needs a 4D mask; use sdpa or eager attention.")
            if attention_mask is None:
                attention_mask = torch.ones(batch_size, total_length, dtype=torch.long, device=inputs_embeds.device)
            attention_mask = self._prefix_bidirectional_mask(
                attention_mask, past_length + num_prefix, inputs_embeds.shape[1], inputs_embeds.dtype
            )

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            use_cache=use_cache,
            # Logits over the prefix are never used: computing them would cost a (P x vocab) matmul per image.
            logits_to_keep=logits_to_keep or text_length,
            **kwargs,
        )
        if image_repeats > 1:
            cache.batch_repeat_interleave(image_repeats)  # in place: generate() keeps using this cache object
            outputs.logits = outputs.logits.repeat_interleave(image_repeats, dim=0)

        if labels is not None:
            logits = outputs.logits
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"`labels` must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}.")
            # Position t predicts token t + 1 (GIT-style: the prefix was dropped before shifting).
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
            if num_items_in_batch is None:
                outputs.loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
            else:
                loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
                outputs.loss = loss / num_items_in_batch
        return outputs

    @torch.no_grad()
    def generate(self, pixel_values=None, image_embeds=None, **kwargs):
        """Caption images with any `GenerationMixin` strategy (greedy, beam search, sampling...).

        The encoder and projector run here, once per image; beam search and `num_return_sequences` then
        repeat the projected features, not the encoder's work.
        """
        if pixel_values is not None:
            if image_embeds is not None:
                raise ValueError("Pass either `pixel_values` or `image_embeds` to generate(), not both.")
            image_embeds = self.get_image_features(pixel_values)
        if image_embeds is None:
            raise ValueError("generate() needs `pixel_values` (or `image_embeds`) to caption.")
        return super().generate(image_embeds=image_embeds, **kwargs)

    def prepare_inputs_for_generation(self, *args, image_embeds=None, **kwargs):
        # The signature of the parent changed across transformers 5.x; take everything and let it decide.
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        cache = model_inputs.get("cache", model_inputs.get("past_key_values"))
        # The image prefix enters the decoder once: after that it lives in the cache.
        if cache is None or cache.get_seq_length() == 0:
            cache = self._prefix_sharing_cache(cache, model_inputs, kwargs)
            model_inputs["image_embeds"] = image_embeds
            # `image_embeds` is kept at one row per image (see _expand_inputs_for_generation); the text rows are
            # `repeats` identical copies per image. With a cache, forward prefills one copy and repeats the
            # cache; without one (use_cache=False, every step is a prefill) the features are simply repeated.
            text = model_inputs.get("input_ids")
            if text is None:
                text = model_inputs.get("inputs_embeds")
            repeats = text.shape[0] // image_embeds.shape[0] if image_embeds is not None and text is not None else 1
            if repeats > 1:
                no_extra_outputs = not (kwargs.get("output_hidden_states") or kwargs.get("output_attentions"))
                if cache is not None and hasattr(cache, "batch_repeat_interleave") and no_extra_outputs:
                    model_inputs["image_repeats"] = repeats
                else:
                    model_inputs["image_embeds"] = image_embeds.repeat_interleave(repeats, dim=0)
        return model_inputs

    # generate() swaps the default cache's layers for PrefixSharingCacheLayer (same values, less copying); a class
    # attribute so that a comparison (tests, benchmarks) can turn it off.
    generation_cache_layer_class = PrefixSharingCacheLayer

    def _prefix_sharing_cache(self, cache, model_inputs, kwargs):
        """Give the first decoding step a cache of PrefixSharingCacheLayer where generate() would use DynamicLayer."""
        layer_class = self.generation_cache_layer_class
        if layer_class is None:
            return cache
        if cache is None:
            # Older 5.x generate() leaves the cache to the decoder, which would make a DynamicCache of its own.
            use_cache = kwargs.get("use_cache")
            if not (use_cache if use_cache is not None else self.config.text_config.use_cache):
                return cache
            name = "cache" if "cache" in inspect.signature(self.language_model.forward).parameters else "past_key_values"
            cache = model_inputs[name] = DynamicCache()
        if getattr(cache, "offloading", False):
            return cache
        layers = getattr(cache, "layers", None)
        if layers and all(type(layer) is DynamicLayer and not layer.is_initialized for layer in layers):
            cache.layers = [layer_class() for _ in layers]
        elif layers == [] and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
            cache.layer_class_to_replicate = layer_class
        return cache

    def _expand_inputs_for_generation(self, *args, **kwargs):
        # GenerationMixin repeats every tensor input per beam / returned sequence before decoding. The image
        # features are identical across those copies, so keep them per image: prepare_inputs_for_generation
        # then lets forward prefill each image's prefix once instead of once per beam.
        image_embeds = kwargs.pop("image_embeds", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(*args, **kwargs)
        if image_embeds is not None:
            model_kwargs["image_embeds"] = image_embeds
        return input_ids, model_kwargs

    def _reorder_cache(self, cache, beam_idx):
        # Beam search keeps the beams it chose at every step. The cache's own `reorder_cache` uses `index_select`
        # on dim 0, which on CPU (torch 2.13) is ~20x slower than advanced indexing for (beams, heads, positions,
        # head_dim) tensors: it took over half of a beam-3 generate(). Same values, gathered faster; with
        # PrefixSharingCacheLayer only the positions after the shared image prefix move.
        layers = getattr(cache, "layers", None)
        if layers is None or not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
            cache.reorder_cache(beam_idx)
            return cache
        within_groups = None
        for layer in layers:
            if isinstance(layer, PrefixSharingCacheLayer):
                if within_groups is None:  # one check per step: beam search never moves a beam to another image
                    within_groups = layer.shared_group > 1 and layer.stays_within_groups(beam_idx)
                layer.reorder_cache(beam_idx, within_groups=within_groups)
            elif layer.keys is not None and layer.keys.numel() > 0:
                index = beam_idx.to(layer.keys.device)
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        return cache

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights and config, with the `auto_map` and `image-to-text` pipeline that remote code needs."""
        from .pipeline_vitgpt2_caption import ImageToTextCaptionPipeline

        module = type(self).__module__.rsplit(".", 1)[-1]
        reference = f"{module}.{type(self).__name__}"
        config_reference = f"{type(self.config).__module__.rsplit('.', 1)[-1]}.{type(self.config).__name__}"
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update(
            {"AutoConfig": config_reference, "AutoModel": reference, "AutoModelForImageTextToText": reference}
        )
        self.config.auto_map = auto_map
        pipeline_module = ImageToTextCaptionPipeline.__module__.rsplit(".", 1)[-1]
        self.config.custom_pipelines = {
            "image-to-text": {
                "impl": f"{pipeline_module}.{ImageToTextCaptionPipeline.__name__}",
                "pt": ["AutoModelForImageTextToText"],
                "type": "multimodal",
            }
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        os.makedirs(save_directory, exist_ok=True)
        # custom_object_save copies the modeling and configuration files; the pipeline is ours to add.
        shutil.copy(inspect.getfile(ImageToTextCaptionPipeline), save_directory)


ViTGPT2CaptionModel.register_for_auto_class("AutoModel")

__all__ = [
    "PrefixSharingCacheLayer",
    "ViTGPT2CaptionModel",
    "ViTGPT2CaptionPreTrainedModel",
    "ViTGPT2CaptionProjector",
]
