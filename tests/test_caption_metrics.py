import math
import random
import shutil
import warnings
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from vitgpt2_caption.caption_metrics import compute_caption_metrics, ptb_tokenize, seed_bleu_1


REPO_ROOT = Path(__file__).resolve().parents[1]
requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap needs Java (not on PATH)")

_WORDS = (
    "a an the man woman dog dogs cat kid's children's people street bus train pizza plate table skateboard "
    "giraffe elephant zebra kitchen sitting standing riding holding on in of with near next to at top two 2 10 "
    "3.5 1,000 red white black-and-white T-shirt it's don't can't isn't won't they're we've I'm you'll he'd "
    "o'clock dogs' James's '90s 90's cannot gonna y'all ma'am rock'n'roll e-mail x-ray co-op mid-air St. Mr. "
    "U.S. etc. a.m. colour grey café naïve"
).split()
_PUNCTUATION = [".", ",", "!", "?", ";", ":", "...", "-", "--", "'", '"', "(", ")", "[", "]", "&", "/", "%",
                "$", "*", "+", "=", "#", "\u2019", "\u2018", "\u201c", "\u201d", "\u2013", "\u2014", "\u2026", "''"]


def _caption(rng):
    words = []
    for _ in range(rng.randint(1, 14)):
        word = rng.choice(_WORDS)
        case = rng.random()
        word = word.capitalize() if case < 0.2 else word.upper() if case < 0.27 else word
        if rng.random() < 0.1:
            words.append(word)  # a repeated word
        if rng.random() < 0.25:  # punctuation glued before or after the word
            mark = rng.choice(_PUNCTUATION)
            word = word + mark if rng.random() < 0.5 else mark + word
        words.append(word)
    return "".join(w + rng.choice([" ", " ", "  "]) for w in words).strip()


def _corpus(n_items=200, n_refs=5, seed=0):
    rng = random.Random(seed)
    predictions = [_caption(rng) for _ in range(n_items)]
    references = [[_caption(rng) for _ in range(n_refs)] for _ in range(n_items)]
    return predictions, references


PREDICTIONS, REFERENCES = _corpus()


@pytest.fixture(scope="module")
def reference_scores():
    """pycocoevalcap used directly, the way its COCOEvalCap does."""
    gts = {i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)}
    res = {i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)}
    gts, res = PTBTokenizer().tokenize(gts), PTBTokenizer().tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n}": b for n, b in enumerate(bleu, start=1)}
    scores["METEOR"], _ = Meteor().compute_score(gts, res)
    scores["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return scores, gts, res


@requires_java
def test_metrics_equal_pycocoevalcap(reference_scores):
    expected, _, _ = reference_scores
    scores = compute_caption_metrics(PREDICTIONS, REFERENCES)
    assert set(scores) == set(expected) | {"seed_bleu_1"}
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1e-6), name


@requires_java
def test_metrics_without_java(reference_scores, monkeypatch, tmp_path):
    expected, _, _ = reference_scores
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: a Java call would now fail
    with pytest.warns(UserWarning, match="METEOR"):
        scores = compute_caption_metrics(PREDICTIONS, REFERENCES)
    assert "METEOR" not in scores
    for name, value in expected.items():
        if name != "METEOR":
            assert scores[name] == pytest.approx(value, abs=1e-6), name


@requires_java
def test_pure_python_tokenizer_matches_java(reference_scores):
    _, gts, res = reference_scores
    for i, (prediction, refs) in enumerate(zip(PREDICTIONS, REFERENCES)):
        assert ptb_tokenize([prediction]) == res[i], prediction
        assert ptb_tokenize(refs) == gts[i], refs


def test_use_java_false_skips_meteor_without_a_warning():
    # An explicit choice: warning on every validation would only be noise (the default, None, still warns).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = compute_caption_metrics(["a dog"], [["a dog", "the dog"]], use_java=False)
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "seed_bleu_1"}


def test_seed_bleu_1_by_hand():
    predictions = ["The cat the cat", "a dog."]
    references = [["the cat sat on the mat", "a cat on a mat"], ["a dog.", "the dog runs fast ."]]
    # 13a tokens, case-sensitive: item 0 -> [The, cat, the, cat]; item 1 -> [a, dog, .] ("." split off).
    # Clipped unigram matches, counting each unigram at most as often as in the reference that has it most:
    #   item 0: "The" 0 (case), "cat" min(2, 1) = 1, "the" min(1, 2) = 1 -> 2 of 4
    #   item 1: "a", "dog", "." -> 3 of 3
    # precision p = 5 / 7; candidate length c = 7.
    # Reference length r sums the SHORTEST reference per item: min(6, 5) + min(3, 5) = 8.
    # c < r, so the brevity penalty is exp(1 - r / c) = exp(1 - 8 / 7).
    expected = 5 / 7 * math.exp(1 - 8 / 7)
    assert seed_bleu_1(predictions, references) == pytest.approx(expected, abs=1e-12)
    # No brevity penalty once the candidates are at least as long as the shortest references.
    assert seed_bleu_1(["a cat on a mat"], [["a cat on a mat", "a cat"]]) == pytest.approx(1.0)


def test_evaluate_module_matches():
    evaluate = pytest.importorskip("evaluate")
    predictions, references = PREDICTIONS[:10], REFERENCES[:10]
    metric = evaluate.load(str(REPO_ROOT / "metrics" / "coco_caption"))
    expected = compute_caption_metrics(predictions, references)
    scores = metric.compute(predictions=predictions, references=references)
    assert scores == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        (["a dog", "a cat"], [["a dog"]], "2 predictions but 1 reference"),
        (["a dog", "a cat"], [["a dog"], []], "item 1 is empty"),
        ([], [], "no predictions"),
        (["a dog"], ["a dog"], "item 0 must be a list of str"),
    ],
)
def test_invalid_inputs(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_caption_metrics(predictions, references, use_java=False)
