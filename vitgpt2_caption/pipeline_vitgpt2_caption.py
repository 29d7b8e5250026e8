"""The `image-to-text` pipeline of the ViT-GPT-2 captioner.

transformers 5.x dropped its own `image-to-text` task; a custom pipeline saved in the model's config
(`custom_pipelines`) is matched first, so `pipeline("image-to-text", model=repo, trust_remote_code=True)`
works on every 5.x release. Remote code: imports only from `transformers`.
"""

from transformers import Pipeline


class ImageToTextCaptionPipeline(Pipeline):
    """Captions images: a PIL image, a file path (or URL), or a list of them -> `[{"generated_text": str}]` each.

    Accepts `max_new_tokens`, `generate_kwargs` (any `generate()` argument: `num_beams`, `do_sample`...)
    and the usual pipeline `batch_size`.
    """

    # The processor (image processor + tokenizer) is one object, loaded with AutoProcessor.
    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("The image-to-text caption pipeline needs the model's processor.")
        # Batching (`batch_size`) collates through these.
        self.tokenizer = self.processor.tokenizer
        self.image_processor = self.processor.image_processor

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unexpected arguments for the image-to-text pipeline: {sorted(kwargs)}.")
        forward_params = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in forward_params:
                raise ValueError("`max_new_tokens` was given both directly and in `generate_kwargs`; give it once.")
            forward_params["max_new_tokens"] = max_new_tokens
        return {}, forward_params, {}

    def __call__(self, images, **kwargs):
        return super().__call__(images, **kwargs)

    def preprocess(self, image):
        return self.processor(images=[image], return_tensors="pt")

    def _forward(self, model_inputs, **generate_kwargs):
        pixel_values = model_inputs["pixel_values"]
        sequences = self.model.generate(pixel_values=pixel_values, **generate_kwargs)
        # (B * R, T) -> (B, R, T): the pipeline splits outputs per image along the first dimension.
        return {"sequences": sequences.reshape(pixel_values.shape[0], -1, sequences.shape[-1])}

    def postprocess(self, model_outputs):
        sequences = model_outputs["sequences"].reshape(-1, model_outputs["sequences"].shape[-1])
        return [{"generated_text": text} for text in self.processor.batch_decode(sequences)]


__all__ = ["ImageToTextCaptionPipeline"]
