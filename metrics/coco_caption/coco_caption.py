"""`evaluate` wrapper around `vitgpt2_caption.caption_metrics`: load it offline with
`evaluate.load("path/to/metrics/coco_caption")`."""

import datasets
import evaluate

# evaluate copies this script into its modules cache, so the implementation is imported from
# the installed package rather than from a file next to it.
from vitgpt2_caption.caption_metrics import compute_caption_metrics


_DESCRIPTION = """
COCO caption metrics as pycocoevalcap computes them (PTB tokenisation, BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D), plus `seed_bleu_1`: HF `evaluate`'s `bleu` with max_order=1, the figure the
original project reported. Without Java, tokenisation falls back to a pure-Python port of the
PTB tokenizer and METEOR is left out with a warning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): one generated caption per image.
    references (`list[list[str]]`): the reference captions of each image (at least one each).
    use_java (`bool`, *optional*): `None` (default) uses Java when found, `False` never does.
Returns:
    `dict[str, float]` with `Bleu_1`..`Bleu_4`, `METEOR` (Java only), `ROUGE_L`, `CIDEr`, `seed_bleu_1`.
Examples:
    >>> metric = evaluate.load("metrics/coco_caption")
    >>> metric.compute(predictions=["a dog runs"], references=[["a dog is running", "a dog runs"]])
"""

_CITATION = """
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR},
  year={2015}
}
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoCaption(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, use_java=None):
        return compute_caption_metrics(predictions, references, use_java=use_java)
