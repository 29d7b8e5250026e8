"""Shared helpers for the benchmarks: base-shape models (ours and the peers), timing, peak memory, matmul rate.

Timing: every candidate runs once as a warm-up, then the candidates run in turn (A, B, C, A, B, C, ...)
`repeats` times, so that slow phases of a shared machine hit all of them alike; we report medians.

Peak memory: torch's CPU allocator is invisible to `tracemalloc`, and `ru_maxrss` only ever grows within
a process, so neither can compare models in ONE process. We sample the process's resident set size
(`/proc/self/statm`) every 2 ms in a background thread during the call and report the peak minus the RSS
just before it: "peak RSS growth". It counts activations, caches and temporaries (not the weights, which
are already resident), is approximate (2 ms sampling, glibc may reuse freed pages), and only works on Linux.
On a GPU (`--device cuda`) the peak is the CUDA allocator's instead (`torch.cuda.max_memory_allocated` minus the
allocation on entry), and every timed call ends with `torch.cuda.synchronize()` so its kernels are inside the time.
"""

import functools
import os
import statistics
import threading
import time

import torch

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# GPT-2's vocabulary; ours adds a <|pad|> token (BOS = EOS = 50256, PAD = 50257), as build_captioner does.
GPT2_VOCAB = 50257


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


class PeakRSS:
    """Context manager: `.peak` = highest RSS seen while inside, minus the RSS on entry (bytes)."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._start = self._max = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self._max, rss_bytes()) - self._start
        return False


class PeakCUDA:
    """Context manager: `.peak` = the CUDA allocator's peak while inside, minus its allocation on entry (bytes)."""

    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self._start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated() - self._start
        return False


def run_alternating(candidates, repeats=3, warmup=1, measure_memory=True, log=print, device="cpu"):
    """Time each `name -> fn()` in turn, `repeats` rounds after `warmup` rounds.

    Returns `{name: {"seconds": [...], "peak_bytes": [...]}}` (warm-up rounds excluded).
    """
    on_gpu = is_gpu(device)
    results = {name: {"seconds": [], "peak_bytes": []} for name in candidates}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            memory_meter = (PeakCUDA() if on_gpu else PeakRSS()) if measure_memory else _Null()
            with memory_meter as memory:
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                seconds = time.perf_counter() - start
            tag = "warm-up" if round_index < warmup else f"round {round_index - warmup + 1}/{repeats}"
            log(f"  [{tag}] {name}: {seconds:.3f} s")
            if round_index >= warmup:
                results[name]["seconds"].append(seconds)
                results[name]["peak_bytes"].append(getattr(memory, "peak", 0))
    return results


class _Null:
    peak = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def median(values):
    return statistics.median(values) if values else float("nan")


def matmul_gflops(size=None, repeats=None, dtype=torch.float32, device="cpu"):
    """Measured dense matmul rate (GFLOP/s, median of `repeats`) of this machine, same threads as the benchmark.

    CPU: 2048^2 x 5. GPU: 8192^2, 10 products per timing (one product is ~1 ms on an H200, too short to time
    alone), 5 timings, after 3 warm-up products that also bring the clocks up.
    """
    on_gpu = is_gpu(device)
    size = size or (8192 if on_gpu else 2048)
    repeats = repeats or 5
    products = 10 if on_gpu else 1
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3 if on_gpu else 1):  # warm-up
        torch.matmul(a, b)
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(products):
            torch.matmul(a, b)
        _sync(device)
        rates.append(2 * size**3 * products / (time.perf_counter() - start) / 1e9)
    return median(rates)


def is_gpu(device):
    return str(device).startswith("cuda")


def memory_column(device):
    """The table header of the peak-memory column: what was measured on this device."""
    return "peak CUDA memory growth MiB" if is_gpu(device) else "peak RSS growth MiB"


def _sync(device):
    if is_gpu(device):
        torch.cuda.synchronize()


def print_table(headers, rows):
    """A GitHub-markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    print("\n".join(lines), flush=True)


def setup_threads(num_threads, device="cpu"):
    torch.set_num_threads(num_threads)
    torch.manual_seed(0)
    import transformers

    where = torch.cuda.get_device_name() if is_gpu(device) else "CPU"
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"cpu_count {os.cpu_count()}, device {device} ({where})",
        flush=True,
    )


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def add_device_arguments(parser, dtype_help):
    """`--device` and `--dtype`, shared by the benchmarks that also run on a GPU."""
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (an NVIDIA GPU).")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help=dtype_help)


# --- base-shape models, random weights ---------------------------------------------------------------

# Our variants the benchmarks compare, by name: (prefix_attention, prefix_pool_size).
OURS_VARIANTS = {
    "ours-causal": ("causal", 1),
    "ours-bidirectional": ("bidirectional", 1),
    "ours-causal-pool2": ("causal", 2),
    "ours-causal-pool4": ("causal", 4),
    "ours-bidirectional-pool2": ("bidirectional", 2),
}


def ours_variant_builders():
    """{name: zero-argument builder} for every entry of `OURS_VARIANTS`."""
    return {
        name: functools.partial(build_ours, attention, prefix_pool_size=pool)
        for name, (attention, pool) in OURS_VARIANTS.items()
    }


def build_ours(prefix_attention="causal", projector_dropout=0.5, prefix_pool_size=1):
    """Ours at base shapes (ViT-B/16 224 + DistilGPT2's shape), vocabulary GPT-2's + <|pad|>.

    `prefix_pool_size=k` is the opt-in pooled prefix: k=2 gives 7x7 pooled patches + [CLS] instead of 14x14 + [CLS],
    k=4 gives 4x4 + [CLS] (ceil: the last row and column of windows hold 2 patches).
    """
    from vitgpt2_caption import ViTGPT2CaptionConfig, ViTGPT2CaptionModel

    bos = eos = GPT2_VOCAB - 1
    pad = GPT2_VOCAB
    text = {"model_type": "gpt2", "n_layer": 6, "vocab_size": GPT2_VOCAB + 1,
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    config = ViTGPT2CaptionConfig(
        text_config=text, prefix_attention=prefix_attention, projector_dropout=projector_dropout,
        prefix_pool_size=prefix_pool_size,
    )
    model = ViTGPT2CaptionModel(config)
    for name, value in (("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)):
        setattr(model.generation_config, name, value)
    return model


def build_vision_encoder_decoder():
    """The popular vit-gpt2 captioner's design: ViT-B/16 encoder, 6-layer GPT-2 decoder with cross-attention."""
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel, VisionEncoderDecoderModel

    encoder = ViTModel(ViTConfig(), add_pooling_layer=False)
    decoder = GPT2LMHeadModel(GPT2Config(n_layer=6, add_cross_attention=True, is_decoder=True))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    eos = GPT2_VOCAB - 1
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = eos
        cfg.bos_token_id = eos
        cfg.eos_token_id = eos
        cfg.pad_token_id = eos
    return model


def build_git():
    """`GitForCausalLM` with git-base's config (GitConfig's defaults are git-base: CLIP ViT-B/16 224, 6 layers)."""
    from transformers import GitConfig, GitForCausalLM

    model = GitForCausalLM(GitConfig())
    return model


def attention_report(model):
    """`{sub-model: config._attn_implementation}` for every PreTrainedModel inside `model`."""
    from transformers import PreTrainedModel

    report = {}
    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel):
            report[name or type(module).__name__] = getattr(module.config, "_attn_implementation", None)
    return report


class CountSDPA:
    """Counts calls of `torch.nn.functional.scaled_dot_product_attention` (by the query length) while active."""

    def __enter__(self):
        import torch.nn.functional as F

        self.calls = 0
        self._original = F.scaled_dot_product_attention

        def counting(*args, **kwargs):
            self.calls += 1
            return self._original(*args, **kwargs)

        F.scaled_dot_product_attention = counting
        return self

    def __exit__(self, *exc):
        import torch.nn.functional as F

        F.scaled_dot_product_attention = self._original
        return False
