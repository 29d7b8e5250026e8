"""vitgpt2-caption: a ViT encoder, a projector, a learned [SEP] and a GPT-2 decoder that writes captions."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .building import MODEL_SIZES, align_with_tokenizer, build_captioner
from .configuration_vitgpt2_caption import ViTGPT2CaptionConfig
from .modeling_vitgpt2_caption import ViTGPT2CaptionModel
from .pipeline_vitgpt2_caption import ImageToTextCaptionPipeline
from .processing_vitgpt2_caption import ViTGPT2CaptionImageProcessor, ViTGPT2CaptionProcessor

__version__ = "0.1.0"

# With the package imported, the Auto classes resolve our model type without trust_remote_code.
AutoConfig.register(ViTGPT2CaptionConfig.model_type, ViTGPT2CaptionConfig, exist_ok=True)
AutoModel.register(ViTGPT2CaptionConfig, ViTGPT2CaptionModel, exist_ok=True)
AutoModelForImageTextToText.register(ViTGPT2CaptionConfig, ViTGPT2CaptionModel, exist_ok=True)
AutoProcessor.register(ViTGPT2CaptionConfig, ViTGPT2CaptionProcessor, exist_ok=True)

__all__ = [
    "MODEL_SIZES",
    "ImageToTextCaptionPipeline",
    "ViTGPT2CaptionConfig",
    "ViTGPT2CaptionImageProcessor",
    "ViTGPT2CaptionModel",
    "ViTGPT2CaptionProcessor",
    "align_with_tokenizer",
    "build_captioner",
]
