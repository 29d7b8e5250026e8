"""--cache_image_features: cached encoder outputs give the same losses, are keyed safely and are reused."""

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_tiny_captioner
from vitgpt2_caption.caption_collator import CaptionCollator
from vitgpt2_caption.feature_cache import ImageFeatureCache, CachedFeatureCollator, cache_key, forward_with_cached_features
from vitgpt2_caption.synthetic import generate_synthetic_dataset


def frozen_captioner(prefix_pool_size=1):
    model, processor = make_tiny_captioner(projector_dropout=0.0, prefix_pool_size=prefix_pool_size)
    model.vision_model.requires_grad_(False)
    return model, processor


def synthetic_train(num_train=12):
    return generate_synthetic_dataset(num_train=num_train, num_validation=1, num_test=1, image_size=40)["train"]


def train_losses(model, loader, cached, steps_per_epoch, epochs=2):
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for epoch in range(epochs):
        loader.collate_fn.set_epoch(epoch)
        for step, batch in enumerate(loader):
            loss = forward_with_cached_features(model, batch).loss if cached else model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if step + 1 == steps_per_epoch:
                break
    return losses


@pytest.mark.parametrize("prefix_pool_size", [1, 2])
def test_cached_losses_equal_uncached(tmp_path, prefix_pool_size):
    dataset = synthetic_train()
    model, processor = frozen_captioner(prefix_pool_size)
    reference_state = {k: v.clone() for k, v in model.state_dict().items()}
    collator = CaptionCollator(processor, max_length=16)
    uncached = train_losses(model, DataLoader(dataset, batch_size=4, collate_fn=collator), cached=False, steps_per_epoch=3)

    model.load_state_dict(reference_state)
    cache = ImageFeatureCache.build_or_load(str(tmp_path), model, processor.image_processor, dataset, log=lambda *a: None)
    loader = DataLoader(cache.dataset(dataset), batch_size=4, collate_fn=CachedFeatureCollator(collator, cache))
    cached = train_losses(model, loader, cached=True, steps_per_epoch=3)
    assert len(cached) == len(uncached) == 6
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(uncached), atol=1e-5, rtol=0)


def test_key_changes_with_encoder_weights_image_size_and_dataset():
    dataset = synthetic_train()
    model, processor = frozen_captioner()
    key = cache_key(model.vision_model, processor.image_processor, dataset)
    assert key == cache_key(model.vision_model, processor.image_processor, dataset)

    weight = next(p for p in model.vision_model.parameters() if p.ndim == 2)
    original = weight[0, 0].item()
    with torch.no_grad():
        weight[0, 0] = original + 1e-3
    assert cache_key(model.vision_model, processor.image_processor, dataset) != key
    with torch.no_grad():
        weight[0, 0] = original
    assert cache_key(model.vision_model, processor.image_processor, dataset) == key

    image_processor = type(processor.image_processor)(size={"height": 48, "width": 48})
    assert cache_key(model.vision_model, image_processor, dataset) != key
    assert cache_key(model.vision_model, processor.image_processor, dataset.select(range(6))) != key


def test_stale_cache_is_not_reused(tmp_path):
    dataset = synthetic_train(4)
    model, processor = frozen_captioner()
    first = ImageFeatureCache.build_or_load(str(tmp_path), model, processor.image_processor, dataset, log=lambda *a: None)
    with torch.no_grad():
        next(p for p in model.vision_model.parameters() if p.ndim == 1).add_(0.5)
    second = ImageFeatureCache.build_or_load(str(tmp_path), model, processor.image_processor, dataset, log=lambda *a: None)
    assert second.folder != first.folder
    with torch.no_grad():
        fresh = model.vision_model(pixel_values=processor(images=dataset[:4]["image"])["pixel_values"]).last_hidden_state
    torch.testing.assert_close(second.features(range(4)), fresh)
    assert not torch.allclose(first.features(range(4)), fresh)


def test_second_epoch_reuses_files_without_calling_the_encoder(tmp_path):
    dataset = synthetic_train(8)
    model, processor = frozen_captioner()
    calls = []
    model.vision_model.register_forward_hook(lambda module, args, output: calls.append(1))
    cache = ImageFeatureCache.build_or_load(
        str(tmp_path), model, processor.image_processor, dataset, batch_size=4, log=lambda *a: None
    )
    assert len(calls) == 2  # epoch 0: 8 images in batches of 4
    files = sorted(p.name for p in (tmp_path / cache.meta["key"]).iterdir())
    mtimes = [p.stat().st_mtime_ns for p in sorted((tmp_path / cache.meta["key"]).iterdir())]

    reloaded = ImageFeatureCache.build_or_load(str(tmp_path), model, processor.image_processor, dataset, log=lambda *a: None)
    loader = DataLoader(reloaded.dataset(dataset), batch_size=4, collate_fn=CachedFeatureCollator(CaptionCollator(processor), reloaded))
    for batch in loader:
        forward_with_cached_features(model, batch).loss.backward()
    assert len(calls) == 2  # neither loading the cache nor training on it ran the encoder
    assert sorted(p.name for p in (tmp_path / cache.meta["key"]).iterdir()) == files
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / cache.meta["key"]).iterdir())] == mtimes


def test_unfrozen_encoder_is_refused(tmp_path):
    import pytest

    model, processor = make_tiny_captioner()
    with pytest.raises(ValueError, match="frozen encoder"):
        ImageFeatureCache.build_or_load(str(tmp_path), model, processor.image_processor, synthetic_train(2))
