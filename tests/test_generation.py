"""generate() through GenerationMixin: cache, batching, beams and sampling agree with a plain loop."""

import pytest
import torch

from conftest import make_images, make_tiny_captioner

from vitgpt2_caption.modeling_vitgpt2_caption import PrefixSharingCacheLayer

pytestmark = pytest.mark.compat
NEW_TOKENS = 8


def full_length(**kwargs):
    # EOS suppressed (min_new_tokens) so every sequence runs the full length and positions line up.
    return dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **kwargs)


@pytest.fixture
def inputs(tiny_captioner):
    model, processor = tiny_captioner
    return model, processor, processor(images=make_images(4))["pixel_values"]


def greedy_loop(model, pixel_values):
    """Greedy decoding written out over forward(): the reference generate() must match."""
    eos = model.config.eos_token_id
    input_ids = torch.full((pixel_values.shape[0], 1), model.config.bos_token_id)
    for _ in range(NEW_TOKENS):
        logits = model(pixel_values=pixel_values, input_ids=input_ids).logits[:, -1]
        logits[:, eos] = -float("inf")
        input_ids = torch.cat([input_ids, logits.argmax(-1, keepdim=True)], dim=1)
    return input_ids


def test_cached_greedy_equals_uncached_and_plain_loop(inputs):
    model, _, pixel_values = inputs
    cached = model.generate(pixel_values=pixel_values, **full_length())
    uncached = model.generate(pixel_values=pixel_values, use_cache=False, **full_length())
    assert cached.shape == (4, 1 + NEW_TOKENS)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, greedy_loop(model, pixel_values))


def test_batch_equals_single_images(inputs):
    model, _, pixel_values = inputs
    batched = model.generate(pixel_values=pixel_values, **full_length())
    singles = torch.cat([model.generate(pixel_values=pixel_values[i : i + 1], **full_length()) for i in range(4)])
    assert torch.equal(batched, singles)


def test_beam_search_returns_sequences_per_image_and_cache_agrees(inputs):
    model, _, pixel_values = inputs
    kwargs = full_length(num_beams=3, num_return_sequences=2)
    cached = model.generate(pixel_values=pixel_values, **kwargs)
    uncached = model.generate(pixel_values=pixel_values, use_cache=False, **kwargs)
    assert cached.shape == (4 * 2, 1 + NEW_TOKENS)
    assert torch.equal(cached, uncached)
    # The two sequences returned per image are distinct hypotheses, not one beam twice.
    assert not torch.equal(cached[0::2], cached[1::2])


def test_seeded_sampling_is_reproducible(inputs):
    model, _, pixel_values = inputs
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        runs.append(model.generate(pixel_values=pixel_values, do_sample=True, top_k=50, **full_length()))
    assert torch.equal(runs[0], runs[1])
    torch.manual_seed(4321)
    assert not torch.equal(runs[0], model.generate(pixel_values=pixel_values, do_sample=True, **full_length()))


def test_encoder_runs_once_per_image_under_beam_search():
    model, processor = make_tiny_captioner()
    pixel_values = processor(images=make_images(3))["pixel_values"]
    calls = []
    model.vision_model.register_forward_hook(lambda module, args, kwargs_or_out: calls.append(1))
    projector_batches = []
    model.projector.register_forward_hook(lambda module, args, out: projector_batches.append(args[0].shape[0]))
    out = model.generate(pixel_values=pixel_values, num_beams=4, num_return_sequences=2, **full_length())
    assert out.shape[0] == 3 * 2
    assert len(calls) == 1 and projector_batches == [3]


def test_generation_stops_at_eos_when_learned():
    """A model whose decoder always prefers EOS stops after one token, and pads the rest of the batch."""
    model, processor = make_tiny_captioner()
    with torch.no_grad():
        model.language_model.lm_head.weight.zero_()  # tied to the input embeddings: zeroes both
        model.language_model.transformer.ln_f.bias.zero_()
        model.language_model.lm_head.weight[model.config.eos_token_id] = 0.0
    bias = torch.zeros(model.config.text_config.vocab_size)
    bias[model.config.eos_token_id] = 10.0
    model.language_model.lm_head.register_forward_hook(lambda m, a, out: out + bias)
    out = model.generate(pixel_values=processor(images=make_images(2))["pixel_values"], max_new_tokens=10)
    assert out.shape == (2, 2)
    assert out[:, -1].tolist() == [model.config.eos_token_id] * 2
    assert processor.batch_decode(out) == ["", ""]


def _stock_dynamic_layer_ops(cls, ops):
    """Apply the same cache operations to a fresh layer of `cls`; return its keys and values after each op."""
    layer, seen = cls(), []
    for op, *args in ops:
        if op == "update":
            layer.update(*args)
        elif op == "reorder":
            index, within_groups = args
            if isinstance(layer, PrefixSharingCacheLayer):
                layer.reorder_cache(index, within_groups=within_groups and layer.stays_within_groups(index))
            else:
                layer.reorder_cache(index)
        else:
            getattr(layer, op)(*args)
        seen.append((layer.keys.clone(), layer.values.clone(), layer.get_seq_length()))
    return seen


def test_prefix_sharing_cache_layer_holds_what_dynamic_layer_holds():
    from transformers.cache_utils import DynamicLayer

    generator = torch.Generator().manual_seed(0)

    def states(batch, length):
        return torch.randn(batch, 2, length, 4, generator=generator), torch.randn(batch, 2, length, 4, generator=generator)

    ops = [("update", *states(2, 5)), ("batch_repeat_interleave", 3)]
    for step in range(40):  # past the spare capacity: the buffer has to grow
        ops.append(("update", *states(6, 1)))
        ops.append(("reorder", torch.tensor([2, 0, 0, 5, 3, 4]), True))  # every beam stays with its image
    ops += [("reorder", torch.tensor([3, 3, 0, 1, 5, 2]), True), ("update", *states(6, 1))]  # crosses images
    ops += [("batch_select_indices", torch.tensor([0, 4])), ("update", *states(2, 2))]
    expected = _stock_dynamic_layer_ops(DynamicLayer, ops)
    got = _stock_dynamic_layer_ops(PrefixSharingCacheLayer, ops)
    for (keys, values, length), (want_keys, want_values, want_length) in zip(got, expected):
        assert length == want_length
        assert torch.equal(keys, want_keys) and torch.equal(values, want_values)


def test_generate_uses_prefix_sharing_cache_with_the_stock_cache_outputs(inputs, monkeypatch):
    model, _, pixel_values = inputs
    kwargs = full_length(num_beams=3, num_return_sequences=2, output_scores=True, return_dict_in_generate=True)
    reorders = []
    original = PrefixSharingCacheLayer.reorder_cache

    def spy(self, beam_idx, within_groups=False):
        reorders.append(within_groups)
        return original(self, beam_idx, within_groups=within_groups)

    monkeypatch.setattr(PrefixSharingCacheLayer, "reorder_cache", spy)
    ours = model.generate(pixel_values=pixel_values, **kwargs)
    # Every reorder in this beam search skipped the shared image prefix.
    assert reorders and all(reorders)
    model.generation_cache_layer_class = None  # transformers' DynamicLayer
    try:
        reorders.clear()
        stock = model.generate(pixel_values=pixel_values, **kwargs)
    finally:
        del model.generation_cache_layer_class
    assert reorders == []
    assert torch.equal(ours.sequences, stock.sequences)
    torch.testing.assert_close(ours.sequences_scores, stock.sequences_scores, rtol=0, atol=1e-5)
