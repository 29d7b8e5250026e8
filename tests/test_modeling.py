"""Model behaviour a user relies on: the prefix is read, masks are what they claim, weights survive saving."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel

from conftest import make_images, make_tiny_captioner, make_tiny_tokenizer
from vitgpt2_caption import ViTGPT2CaptionConfig, ViTGPT2CaptionModel, ViTGPT2CaptionProcessor, build_captioner

CAPTIONS = ["a red circle on a grey background", "two yellow triangles", "a white star"]


def decoder_hidden_states(model, image_embeds, input_ids):
    out = model(image_embeds=image_embeds, input_ids=input_ids, output_hidden_states=True)
    return out.hidden_states[-1], out.logits


def test_bidirectional_prefix_sees_later_patches_and_caption_stays_causal():
    for mode in ("causal", "bidirectional"):
        model, processor = make_tiny_captioner(mode)
        image_embeds = model.get_image_features(processor(images=make_images(1))["pixel_values"]).detach()
        input_ids = processor(text=CAPTIONS[:1])["input_ids"]
        changed = image_embeds.clone()
        changed[:, -1] += 1.0  # only the last image token
        hidden, logits = decoder_hidden_states(model, image_embeds, input_ids)
        hidden_changed, _ = decoder_hidden_states(model, changed, input_ids)
        # Causal: position 0 cannot see the last patch, so it is bit-identical. Bidirectional: it moves
        # (by little: a random tiny model attends almost uniformly, with weights of std 0.02).
        first_prefix_change = (hidden[:, 0] - hidden_changed[:, 0]).abs().max().item()
        if mode == "causal":
            assert first_prefix_change == 0.0
        else:
            assert first_prefix_change > 1e-8

        # A later caption token never changes an earlier position's logits, in either mode.
        later = input_ids.clone()
        later[:, 3] = (later[:, 3] + 7) % model.config.text_config.vocab_size
        _, logits_later = decoder_hidden_states(model, image_embeds, later)
        torch.testing.assert_close(logits_later[:, :3], logits[:, :3], rtol=0, atol=1e-6)
        assert not torch.allclose(logits_later[:, 3:], logits[:, 3:])


def test_caption_logits_depend_on_the_image(tiny_captioner):
    model, processor = tiny_captioner
    first, second = make_images(2)
    text = processor(text=CAPTIONS[:1])
    logits_a = model(**processor(images=[first]), **text).logits
    logits_b = model(**processor(images=[second]), **text).logits
    assert (logits_a - logits_b).abs().max() > 1e-3


def test_loss_ignores_padding_and_counts_eos(tiny_captioner):
    model, processor = tiny_captioner
    images = processor(images=make_images(3))
    short = processor(text=CAPTIONS)
    long = processor(text=CAPTIONS, max_length=40, padding="max_length")
    assert long["input_ids"].shape[1] == 40 > short["input_ids"].shape[1]
    loss_short = model(**images, **short).loss
    loss_long = model(**images, **long).loss
    torch.testing.assert_close(loss_short, loss_long, rtol=0, atol=1e-5)

    # The loss is the mean cross-entropy over caption tokens and EOS: recompute it by hand.
    logits = model(**images, **short).logits
    labels = short["labels"]
    picked = [
        torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
        for b in range(labels.shape[0])
        for t in range(1, labels.shape[1])
        if labels[b, t] != -100
    ]
    assert labels[labels != -100].eq(processor.tokenizer.eos_token_id).sum() == 3  # one EOS per caption
    torch.testing.assert_close(loss_short, -torch.stack(picked).mean(), rtol=0, atol=1e-5)


def test_save_load_is_bit_exact(saved_captioner):
    folder, model, _ = saved_captioner
    loaded = ViTGPT2CaptionModel.from_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    assert "sep_embedding" in saved
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(loaded.sep_embedding, model.sep_embedding)
    # The LM head stays tied to the token embeddings after loading.
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert AutoModel.from_pretrained(folder).__class__ is ViTGPT2CaptionModel


def test_from_encoder_decoder_pretrained_keeps_checkpoint_weights(tmp_path):
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64), add_pooling_layer=False)
    tokenizer = make_tiny_tokenizer(with_pad=False)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128))
    vit.save_pretrained(tmp_path / "vit")
    gpt2.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    # What a ViT checkpoint's image processor file says (the ViTImageProcessor format, resample as PIL's code).
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        '{"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32}, "resample": 2,'
        ' "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}'
    )

    model = ViTGPT2CaptionModel.from_encoder_decoder_pretrained(tmp_path / "vit", tmp_path / "gpt2", projector_dropout=0.1)
    assert model.config.projector_dropout == 0.1
    assert model.config.projector_hidden_size == 64  # twice the decoder width, as in the original
    for name, tensor in vit.state_dict().items():
        assert torch.equal(model.vision_model.state_dict()[name], tensor), name
    for name, tensor in gpt2.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[name], tensor), name

    built, processor = build_captioner(tmp_path / "vit", tmp_path / "gpt2")
    assert isinstance(processor, ViTGPT2CaptionProcessor)
    assert processor.image_processor.size == {"height": 32, "width": 32}
    assert processor.image_processor.resample == "bilinear"
    assert processor.image_processor.image_mean == [0.485, 0.456, 0.406]
    assert processor.tokenizer.pad_token_id == len(tokenizer)  # <|pad|> was missing in the checkpoint: added
    assert built.get_input_embeddings().num_embeddings == len(tokenizer) + 1
    assert torch.equal(built.vision_model.embeddings.patch_embeddings.projection.weight,
                       vit.embeddings.patch_embeddings.projection.weight)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(projector_hidden_size=-4), "projector_hidden_size"),
        (dict(projector_dropout=1.5), "projector_dropout"),
        (dict(prefix_attention="sideways"), "prefix_attention"),
        (dict(prefix_pool_size=0), "prefix_pool_size"),
        (dict(vision_config={"model_type": "clip_vision_model"}), "vision_config"),
        (dict(text_config={"model_type": "llama"}), "text_config"),
        (dict(text_config={"model_type": "gpt2", "n_positions": 16}), "n_positions"),
        (dict(vision_config=ViTConfig(hidden_size=-1)), "hidden_size"),
    ],
)
def test_config_rejects_nonsense_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ViTGPT2CaptionConfig(**kwargs)


def test_config_round_trips_with_sub_configs_as_dicts(tmp_path):
    config = ViTGPT2CaptionConfig(
        vision_config={"model_type": "deit", "image_size": 32, "patch_size": 8},
        text_config=GPT2Config(n_layer=2),
        prefix_attention="bidirectional",
    )
    config.save_pretrained(tmp_path)
    loaded = ViTGPT2CaptionConfig.from_pretrained(tmp_path)
    assert loaded.vision_config.model_type == "deit"
    assert loaded.text_config.n_layer == 2
    assert loaded.prefix_attention == "bidirectional"
    assert loaded.num_prefix_tokens == 16 + 2 + 1  # patches, [CLS] + [DIST], [SEP]


@pytest.mark.parametrize("pool, side", [(2, 2), (3, 2)])
def test_prefix_pooling_averages_patch_windows_and_keeps_cls(pool, side):
    """Tiny ViT: a 4x4 patch grid. Pool 2 -> 2x2 windows; pool 3 -> 3x3, 3x1, 1x3 and 1x1 windows (ceil)."""
    torch.manual_seed(0)
    model, _ = make_tiny_captioner(prefix_pool_size=pool)
    pixel_values = torch.randn(2, 3, 32, 32)
    assert model.config.num_image_tokens == 1 + side * side

    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state  # (2, 1 + 16, D)
    grid = hidden[:, 1:].reshape(2, 4, 4, -1)
    windows = [grid[:, r : r + pool, c : c + pool].mean(dim=(1, 2)) for r in range(0, 4, pool) for c in range(0, 4, pool)]
    expected = model.projector(torch.cat([hidden[:, :1], torch.stack(windows, dim=1)], dim=1))

    features = model.get_image_features(pixel_values)
    assert features.shape == (2, 1 + side * side, model.config.text_config.hidden_size)
    torch.testing.assert_close(features, expected)
    # The decoder reads the shorter prefix: logits for every caption token, from the pooled image.
    input_ids = torch.tensor([[model.config.bos_token_id, 5, 6]] * 2)
    assert model(pixel_values=pixel_values, input_ids=input_ids).logits.shape[:2] == (2, 3)


def test_deit_encoder_prefix_length_matches_config():
    model = ViTGPT2CaptionModel(ViTGPT2CaptionConfig(
        vision_config={"model_type": "deit", "image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        text_config={"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "vocab_size": 50},
    ))
    features = model.get_image_features(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, model.config.num_image_tokens, 32)


def test_mismatched_images_and_captions_fail_clearly(tiny_captioner):
    model, processor = tiny_captioner
    with pytest.raises(ValueError, match="2 images for 3 captions"):
        model(**processor(images=make_images(2)), input_ids=processor(text=CAPTIONS)["input_ids"])
    with pytest.raises(ValueError, match="pixel_values"):
        model.generate(max_new_tokens=2)


def test_frozen_encoder_gets_no_gradient_and_keeps_no_graph(tiny_captioner):
    model, processor = tiny_captioner
    model.train()
    model.vision_model.requires_grad_(False)
    batch = processor(images=make_images(2), text=CAPTIONS[:2])
    model(**batch).loss.backward()
    assert all(p.grad is None for p in model.vision_model.parameters())
    assert model.projector.linear_1.weight.grad is not None
    assert model.sep_embedding.grad is not None
