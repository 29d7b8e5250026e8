"""COCO caption metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D, plus the original project's BLEU-1.

The COCO numbers are pycocoevalcap's: captions go through its PTB tokenisation (Stanford
PTBTokenizer, Java) and then its scorers, so every value equals calling pycocoevalcap directly.
Without Java we tokenise with `ptb_tokenize`, a pure-Python port of the parts of the Stanford
lexer that captions use, and leave METEOR out (it is a Java program).

`seed_bleu_1` is the figure the original project reported: HF `evaluate`'s `bleu` with
`max_order=1`, which is not a COCO metric (different tokeniser, case-sensitive, corpus brevity
penalty against the shortest reference). `evaluate.load("bleu")` needs the Hub, so it is
re-implemented here from evaluate's `tokenizer_13a.py` and `nmt_bleu.py`.
"""

from __future__ import annotations

import collections
import math
import re
import shutil
import warnings

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, PTBTokenizer


__all__ = ["compute_caption_metrics", "ptb_tokenize", "seed_bleu_1"]


# --------------------------------------------------------------------------------------------
# Pure-Python PTB tokenisation
# --------------------------------------------------------------------------------------------
# pycocoevalcap runs `edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` from
# CoreNLP 3.4.1 and drops the tokens in PUNCTUATIONS. That tokenizer is a JFlex lexer: at each
# position the rule with the LONGEST match wins (trailing context counts towards the length),
# ties go to the rule listed first. `_RULES` keeps the lexer's rule order for the rules that
# caption text can reach; `tests/test_caption_metrics.py` checks the result token for token
# against the Java tokenizer. Out of scope (may differ from Java): URLs, e-mail addresses,
# SGML tags, phone numbers, smileys and scripts other than Latin.
#
# Each rule is (regex, action). A regex may end in trailing context after the named group
# `tok`; the token is `tok` and the lexer resumes right after it. Actions: None keeps the text,
# a string replaces it, a callable maps it, _DROP emits nothing (whitespace).

_DROP = object()
# \w minus digits, "_" and the common No-category numerals (JFlex [:letter:] excludes them)
_LETTER = "[^\\W\\d_\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f]"
_ALNUM = r"[^\W_]"
_APOS = "['\u0092\u2019]"
_APOS_ETC = "['`\u0092\u2019\u0091\u2018\u201b]"
_REDAUX = rf"{_APOS}(?:[msdMSD]|(?i:re|ve|ll))"
# Abbreviations the lexer keeps whole with their period ("a.", "st.", "u.s."). Its sentence-final
# variants only add a separate "." token, which COCO drops anyway, so they are not reproduced.
_ABBREV = (
    r"(?i:mr|mrs|ms|miss|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|"
    r"sgt|cpl|pvt|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|"
    r"jos|cie|a\.k\.a|cf|treas|invt|elec|natl|m[ft]g|jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|"
    r"dec|mon|tues?|wed|thurs?|fri|ala|ariz|calif|colo|conn|dak|fla|ga|ind|kans?|ky|md|mich|"
    r"minn|mo|mont|neb|nev|okla|penn|tenn|va|vt|wisc?|wyo|del|la|pa|tex|inc|cos?|corp|pp?tys?|"
    r"ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys|nos?|prop|ph|tel|est|ext|sq|ft|jr|sr|bros|"
    r"(?:ed|ph)\.d|blvd|rd|esq|etc|al|seq)"
    r"|Ark|Ill|Mass|Miss|Ore|Wash"  # case-sensitive in the lexer: they are also common words
    r"|[A-Za-z](?:\.[A-Za-z])*"
)
_QUOTE_LEFT = {"'": "`", '"': "``", "\u0091": "`", "\u2018": "`", "\u201b": "`", "\u2039": "`",
               "\u0093": "``", "\u201c": "``", "\u00ab": "``"}
_QUOTE_RIGHT = {"'": "'", '"': "''", "\u0092": "'", "\u2019": "'", "\u203a": "'",
                "\u0094": "''", "\u201d": "''", "\u00bb": "''"}


def _quotes(table):
    # latexQuotes: ASCII quotes follow the side the lexer guessed, curly ones keep their own.
    def convert(text):
        return "".join(
            _QUOTE_LEFT.get(c, c) if c in "\u0091\u2018\u201b\u2039\u0093\u201c\u00ab" else table.get(c, c)
            for c in text
        )

    return convert


def _hyphens(text):
    # ptb3Dashes: runs of 3 or 4 hyphens become "--", others stay as written.
    return "--" if 3 <= len(text) <= 4 else text


_RULES = [(re.compile(pattern), action) for pattern, action in [
    # assimilations the lexer splits: "cannot" -> "can not", "gonna" -> "gon na"
    (r"(?P<tok>(?i:can|'t))(?i:not|was)", None),
    (r"(?P<tok>(?i:'t|gon|got|lem|gim|wan))(?i:is|na|ta|me)", None),
    (r"<\/?[A-Za-z!][^>\s]*>", None),  # SGML tags
    ("[\u0096\u0097\u2013\u2014\u2015]", "--"),
    (r"(?i:&amp;)", "&"),
    (rf"(?P<tok>{_LETTER}+){_REDAUX}", None),          # "it" in "it's"
    (rf"(?P<tok>[A-Za-z]*[A-MO-Za-mo-z])(?i:n){_APOS_ETC}(?i:t)", None),  # "do" in "don't"
    (rf"{_LETTER}+", None),
    (  # words with an apostrophe that the lexer keeps whole: "o'clock", "ma'am", "'90s"
        rf"{_APOS}(?i:n){_APOS}?|[lLdDjJ]{_APOS}|(?i:dunkin|somethin|ol){_APOS}|{_APOS}(?i:em)"
        rf"|[A-HJ-XZn]{_APOS_ETC}{_LETTER}{{2,}}|{_APOS}[2-9]0(?i:s)|{_APOS}(?i:till?)"
        rf"|{_LETTER}+[aeiouyAEIOUY]{_APOS_ETC}[aeiouA-Z]{_LETTER}*|{_APOS}(?i:cause)"
        r"|(?i:cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
        None,
    ),
    (rf"(?P<tok>[yY]{_APOS}){_LETTER}", None),          # "y'" in "y'all"
    (r"(?:https?|ftp)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]", None),
    (r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
     r"[^ \t\n\f\r\"<>|(){}\[\].,;:\u00a0]+", None),  # e-mail
    (rf"@[a-zA-Z_][a-zA-Z_0-9]*|#{_LETTER}+", None),   # @names, #hashtags
    (rf"(?P<tok>{_REDAUX})(?:[^A-Za-z]|$)", _quotes(_QUOTE_RIGHT)),
    (rf"(?i:n){_APOS_ETC}(?i:t)", _quotes(_QUOTE_RIGHT)),
    (r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", None),           # dates
    (r"[-+]?(?:\d*(?:[.:,\u00ad]\d+)+|\d+)", None),     # numbers, signed ones included
    (r"(?:\d{1,4}-)?\d{1,4}\\?/\d{1,4}", None),         # fractions
    ("[\u00bc\u00bd\u00be\u2153\u2154]",
     lambda t: {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}[t]),
    (r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\.D\.s|pro-|anti-|S&P-500|S&Ls)"
     rf"|(?i:cap){_APOS}(?i:n)|(?i:c){_APOS}(?i:est)", None),
    (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None),  # "x/y"
    (r"[A-Z]*\$|#", None),
    ("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac]",
     lambda t: {"\u00a2": "cents", "\u00a3": "#"}.get(t, "$")),
    (rf"(?:{_ABBREV})\.", None),                         # "a.", "st.", "u.s."
    (rf"{_LETTER}+(?:[.?!]{_LETTER}+)+", None),          # "word.word", "word?word"
    (rf"(?P<tok>{_APOS}\d\d)(?:\s|$)", None),
    (rf"(?P<tok>{_LETTER}+\.)[,;:]", None),              # "etc." before a comma
    (r"(?P<tok>\"|&quot;)[A-Za-z0-9$]", _quotes(_QUOTE_LEFT)),  # a double quote before a word opens
    (r"(?P<tok>'')[A-Za-z0-9$]", None),
    (r"\"|&quot;", _quotes(_QUOTE_RIGHT)),
    (r"[A-Z]+(?:[+&][A-Z]+)+", None),                   # "AT&T"
    (r"(?P<tok>[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]])(?:[^A-Za-z0-9]|$)", lambda t: t.replace("(", "-LRB-").replace(")", "-RRB-")),
    (r"[+%&~^|\\=]", None),
    (r"\(", "-LRB-"), (r"\)", "-RRB-"),
    (r"\[", "-LSB-"), (r"\]", "-RSB-"),
    (r"\{", "-LCB-"), (r"\}", "-RCB-"),
    (r"<|>", None),
    (r"-+", _hyphens),
    ("\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]", "..."),
    (r"@+|#+|_+|\*+", None),
    (r"[,;:]", None),
    (r"[?!]+", None),
    (r"[.]", None),
    (r"/", None),
    (  # hyphenated words: "t-shirt", "black-and-white", "3.5-inch"
        rf"{_ALNUM}(?:{_ALNUM}|[.,\u00ad])*(?:-(?:(?:{_ALNUM}|\u00ad)+|[A-Za-z](?:\.[A-Za-z])+\.))+", None,
    ),
    (  # words with inner "o'", "d'", "l'": "o'neil", "d'artagnan"
        rf"(?:[dDoOlL]{_APOS_ETC}{_ALNUM})?{_ALNUM}+"
        rf"(?:[-_\u058a\u2010\u2011](?:[dDoOlL]{_APOS_ETC}{_ALNUM})?{_ALNUM}+)*",
        None,
    ),
    (rf"(?P<tok>'){_LETTER}[^ \t\n\r\u00a0]", _quotes(_QUOTE_LEFT)),  # opening single quote
    (rf"{_REDAUX}", _quotes(_QUOTE_RIGHT)),
    ("''|['\u0092\u2019]|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f"
     "\u2039\u203a\u00ab\u00bb]{1,2}", _quotes(_QUOTE_RIGHT)),
    ("[\u00a7\u00a9\u00ac\u00ae\u00b0-\u00ba\u00d7\u00f7\u2020-\u2023\u2032-\u2038\u2100-\u214f\u2190-\u23ff\u2600-\u26ff]",
     None),  # symbols that stand alone
    ("[ \t\u00a0\u2000-\u200a\u3000\u200b\u200e\u200f\ufeff]+", _DROP),
]]


def _tokenize_line(line: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(line):
        best, best_len = None, 0
        for regex, action in _RULES:
            match = regex.match(line, pos)
            if match and match.end() - pos > best_len:  # strictly longer: ties keep the earlier rule
                best, best_len = (match, action), match.end() - pos
        if best is None:  # the lexer deletes characters it cannot tokenise
            pos += 1
            continue
        match, action = best
        end = match.end("tok") if "tok" in match.re.groupindex else match.end()
        text = line[pos:end]
        pos = end
        if action is _DROP:
            continue
        if isinstance(action, str):
            text = action
        elif action is not None:
            text = action(text)
        tokens.append(text.replace("\u00ad", "").lower())
    return tokens


def ptb_tokenize(captions: list[str]) -> list[str]:
    """Tokenise captions like pycocoevalcap's `PTBTokenizer`, without Java.

    Returns one space-joined, lower-cased string per caption, with the tokens in
    pycocoevalcap's `PUNCTUATIONS` removed.
    """
    punctuation = set(PUNCTUATIONS)
    # PTBTokenizer replaces "\n" by " " and tokenises each caption as one line.
    return [
        " ".join(t for t in _tokenize_line(caption.replace("\n", " ")) if t not in punctuation)
        for caption in captions
    ]


# --------------------------------------------------------------------------------------------
# The original project's BLEU-1 (HF `evaluate` "bleu", max_order=1)
# --------------------------------------------------------------------------------------------
# sacrebleu's "13a" tokeniser as evaluate's metrics/bleu/tokenizer_13a.py has it.
_TOKENIZER_13A = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # period and comma unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash when preceded by a digit
]


def _tokenize_13a(line: str) -> list[str]:
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for regex, replacement in _TOKENIZER_13A:
        line = regex.sub(replacement, line)
    return line.split()


def seed_bleu_1(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU with max order 1 exactly as `evaluate.load("bleu").compute(..., max_order=1)`.

    That is tensorflow/nmt's `compute_bleu` (smooth=False) on 13a tokens, case-sensitive: clipped
    unigram precision times the brevity penalty exp(1 - r/c) when c < r, where c is the total
    prediction length and r sums, per item, the length of the SHORTEST reference.
    """
    matches = translation_length = reference_length = 0
    for prediction, refs in zip(predictions, references):
        prediction = _tokenize_13a(prediction)
        refs = [_tokenize_13a(r) for r in refs]
        reference_length += min(len(r) for r in refs)
        translation_length += len(prediction)
        max_ref_counts = collections.Counter()
        for ref in refs:
            max_ref_counts |= collections.Counter(ref)  # "|" keeps each unigram's max count
        matches += sum((collections.Counter(prediction) & max_ref_counts).values())
    if translation_length == 0 or reference_length == 0:  # nmt_bleu returns bp = 0 here
        return 0.0
    precision = matches / translation_length
    ratio = translation_length / reference_length
    brevity_penalty = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return precision * brevity_penalty


# --------------------------------------------------------------------------------------------
# COCO metrics
# --------------------------------------------------------------------------------------------
def _check_inputs(predictions, references):
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} reference lists; "
            "there must be one list of references per prediction."
        )
    if not predictions:
        raise ValueError("Got no predictions to score.")
    for index, (prediction, refs) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str):
            raise ValueError(f"Prediction {index} is a {type(prediction).__name__}, expected a str.")
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"References for item {index} must be a list of str, got {refs!r}.")
        if len(refs) == 0:
            raise ValueError(f"Reference list for item {index} is empty; each item needs at least one reference.")


class _QuietBleu(Bleu):
    # pycocoevalcap's Bleu prints its length ratios on every call; same score, no print.
    def compute_score(self, gts, res):
        return super().compute_score(gts, res, verbose=0)


def _score(name, scorer, gts, res):
    # pycocoevalcap scorers fail with bare asserts or Java errors: say which metric broke.
    try:
        return scorer.compute_score(gts, res)
    except Exception as error:
        raise RuntimeError(f"pycocoevalcap {name} scorer failed: {error!r}") from error


def compute_caption_metrics(
    predictions: list[str], references: list[list[str]], *, use_java: bool | None = None
) -> dict[str, float]:
    """Score captions with the COCO caption metrics and the original project's BLEU-1.

    Args:
        predictions: one generated caption per image.
        references: for each image, its list of reference captions (at least one).
        use_java: `None` uses Java when it is on PATH; `False` never uses it; `True` requires it.
            Without Java, tokenisation is `ptb_tokenize` (same tokens) and METEOR is left out.

    Returns:
        `Bleu_1`..`Bleu_4`, `METEOR` (Java only), `ROUGE_L`, `CIDEr` (CIDEr-D) as pycocoevalcap
        computes them, and `seed_bleu_1` (see `seed_bleu_1`).
    """
    _check_inputs(predictions, references)
    java_found = shutil.which("java") is not None
    if use_java and not java_found:
        raise RuntimeError("use_java=True but no `java` executable is on PATH.")
    # Warn only when METEOR is dropped against the caller's wish; `use_java=False` is a choice, not a surprise.
    warn_no_meteor = use_java is None and not java_found
    use_java = java_found if use_java is None else use_java

    # pycocoevalcap's input format, keyed by item index; one tokeniser call (one JVM) for both.
    captions = {("res", i): [{"caption": p}] for i, p in enumerate(predictions)}
    captions.update({("gts", i): [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    if use_java:
        tokenized = PTBTokenizer().tokenize(captions)
    else:
        tokenized = {key: ptb_tokenize([c["caption"] for c in caps]) for key, caps in captions.items()}
    gts = {i: tokenized[("gts", i)] for i in range(len(predictions))}
    res = {i: tokenized[("res", i)] for i in range(len(predictions))}

    results = {}
    bleu, _ = _score("Bleu", _QuietBleu(4), gts, res)
    results.update({f"Bleu_{n}": float(score) for n, score in enumerate(bleu, start=1)})
    if use_java:
        meteor = Meteor()
        try:
            results["METEOR"] = float(_score("METEOR", meteor, gts, res)[0])
        finally:
            del meteor  # its __del__ stops the METEOR JVM
    elif warn_no_meteor:
        warnings.warn("METEOR needs Java and is left out of the caption metrics (no `java` executable is on PATH).", stacklevel=2)
    results["ROUGE_L"] = float(_score("ROUGE_L", Rouge(), gts, res)[0])
    results["CIDEr"] = float(_score("CIDEr", Cider(), gts, res)[0])
    results["seed_bleu_1"] = seed_bleu_1(predictions, references)
    return results

