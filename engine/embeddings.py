"""Embedders: functions from texts to fixed-width vectors, and the check every vector passes.

This module owns the :class:`Embedder` protocol, the built-in
:class:`HashingEmbedder`, and :func:`embed`, the one door through which a
vector primitive gets vectors from any embedder. Invariant: whatever the
embedder, :func:`embed` returns a C-contiguous ``float32`` array of shape
``(len(texts), dim)`` holding only finite values, or raises
:class:`~inmem.errors.InvalidValue` -- a malformed vector never reaches a
store.

:class:`HashingEmbedder` is the "hashing trick" (Weinberger, Dasgupta,
Langford, Smola and Attenberg, "Feature Hashing for Large Scale Multitask
Learning", ICML 2009, https://arxiv.org/abs/0902.2206): each feature (a word
n-gram, optionally a character n-gram) is hashed to one of ``dim`` buckets
with a second hash bit choosing its sign, so collisions cancel in expectation
and inner products are preserved without bias. It needs no model, no
vocabulary and no network: same text, same vector, in every process (the hash
is BLAKE2b, never Python's salted ``hash()``). It captures word overlap, not
meaning: good for tests, demos and keyword-ish recall; use a real embedding
model (any callable matching :class:`Embedder`) for semantic search.

numpy is an optional dependency (``pip install 'inmem[vectors]'``); it is
imported lazily, and :func:`require_numpy` says how to install it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from .errors import InvalidArgument, InvalidValue

if TYPE_CHECKING:  # pragma: no cover
    import numpy

__all__ = ["Embedder", "HashingEmbedder", "embed", "require_numpy"]

_INSTALL_HINT = "pip install 'inmem[vectors]'"
_WORD = re.compile(r"\w+")


def require_numpy() -> Any:
    """Import and return numpy; ``ImportError`` telling how to install it if it is missing."""
    try:
        import numpy
    except ImportError as exc:
        raise ImportError(f"inmem vectors and embeddings need numpy: {_INSTALL_HINT}") from exc
    return numpy


@runtime_checkable
class Embedder(Protocol):
    """Anything callable as ``embedder(texts: list[str]) -> array-like of shape (len(texts), dim)``.

    A row per text, all rows the same width ``dim``, finite numbers. A plain
    function qualifies; so does a bound method of a model client. An optional
    ``name`` attribute (a ``str``) identifies the vector space in messages and
    lets a collection record which embedder produced its vectors.
    """

    def __call__(self, texts: list[str], /) -> Any: ...


class HashingEmbedder:
    """Deterministic feature-hashing embedder: ``texts -> float32 array (len(texts), dim)``.

    Features of a text: its lower-cased words (``\\w+`` runs, Unicode-aware),
    taken as word n-grams for each ``n`` in ``ngrams`` (default unigrams and
    bigrams), plus character n-grams of each word padded with spaces for each
    ``n`` in ``char_ngrams`` (default none; ``(3,)`` adds trigrams, which make
    "cat" and "cats" overlap). Each feature adds ``+1`` or ``-1`` (a hash bit)
    to one of ``dim`` buckets (BLAKE2b keyed by ``seed``); rows are then
    L2-normalised to length 1. A text with no word (``""``, punctuation only)
    gives the **zero vector**, which has no direction: a cosine index refuses
    it. (So, very rarely, does a text whose few features all cancel out in
    shared buckets; a larger ``dim`` makes that vanishingly unlikely.)

    ``dim`` (int >= 1), ``ngrams``/``char_ngrams`` (tuples of ints >= 1) and
    ``seed`` (int in ``[0, 2**64)``) are checked here and raise
    :class:`~inmem.errors.InvalidArgument`. The same parameters give the same
    vectors in every process and on every platform. Cost: O(total text length
    x number of n-gram sizes) per call.
    """

    def __init__(
        self,
        dim: int = 256,
        *,
        ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] = (),
        seed: int = 0,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InvalidArgument(f"HashingEmbedder dim must be an int >= 1, got {dim!r}")
        self.dim = dim
        self.ngrams = _sizes("ngrams", ngrams, allow_empty=False)
        self.char_ngrams = _sizes("char_ngrams", char_ngrams, allow_empty=True)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise InvalidArgument(f"HashingEmbedder seed must be an int in [0, 2**64), got {seed!r}")
        self.seed = seed
        self._bucket = functools.lru_cache(maxsize=1 << 16)(self._hash_feature)

    @property
    def name(self) -> str:
        """The vector space's identity, e.g. ``"hashing-256"``; non-default parameters are appended
        (``"hashing-256-w1,2,3-c3-s7"``), so two embedders with equal names give equal vectors."""
        name = f"hashing-{self.dim}"
        if self.ngrams != (1, 2):
            name += "-w" + ",".join(map(str, self.ngrams))
        if self.char_ngrams:
            name += "-c" + ",".join(map(str, self.char_ngrams))
        if self.seed:
            name += f"-s{self.seed}"
        return name

    def __repr__(self) -> str:
        return (f"HashingEmbedder(dim={self.dim}, ngrams={self.ngrams}, "
                f"char_ngrams={self.char_ngrams}, seed={self.seed})")

    def __call__(self, texts: list[str]) -> numpy.ndarray:
        """Embed ``texts`` (a list of ``str``): float32 array ``(len(texts), dim)``, rows of length 1 or 0."""
        texts = _check_texts(texts, self.name)
        np = require_numpy()
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            counts: dict[int, float] = {}
            for feature in self._features(text):
                bucket, sign = self._bucket(feature)
                counts[bucket] = counts.get(bucket, 0.0) + sign
            norm = math.sqrt(sum(c * c for c in counts.values()))
            if norm > 0.0:  # every count is an integer: norm is 0 only when every bucket cancelled
                for bucket, c in counts.items():
                    out[row, bucket] = c / norm
        return out.astype(np.float32)

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        features = []
        for n in self.ngrams:
            # "\x1f" (unit separator) cannot occur inside a \w+ word: n-grams never alias
            features.extend(f"w{n}\x1f" + "\x1f".join(words[i:i + n]) for i in range(len(words) - n + 1))
        for n in self.char_ngrams:
            for word in words:
                padded = f" {word} "
                features.extend(f"c{n}\x1f" + padded[i:i + n] for i in range(len(padded) - n + 1))
        return features

    def _hash_feature(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(
            feature.encode("utf-8"), digest_size=8, key=self.seed.to_bytes(8, "little"), person=b"inmem-hash"
        ).digest()
        h = int.from_bytes(digest, "little")
        return (h >> 1) % self.dim, (1.0 if h & 1 else -1.0)


def embed(embedder: Embedder, texts: list[str], dim: int) -> numpy.ndarray:
    """Call ``embedder(texts)`` and return its output as a C-contiguous float32 ``(len(texts), dim)`` array.

    ``texts`` must be a list (or tuple) of ``str`` (a bare ``str`` is refused:
    it would embed each character); an empty list returns an empty
    ``(0, dim)`` array without calling the embedder. Raises
    :class:`~inmem.errors.InvalidArgument` for bad ``texts`` or ``dim``, and
    :class:`~inmem.errors.InvalidValue` -- naming the embedder -- if the output
    is not numeric, does not have shape ``(len(texts), dim)``, or holds a NaN
    or infinity (including a value too large for float32). Exceptions raised
    by the embedder itself propagate unchanged. ``ImportError`` if numpy is
    missing.
    """
    np = require_numpy()
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise InvalidArgument(f"dim must be an int >= 1, got {dim!r}")
    who = _embedder_name(embedder)
    texts = _check_texts(texts, who)
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    raw = embedder(texts)
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError) as exc:  # ragged rows, unconvertible objects
        raise InvalidValue(f"embedder {who} returned something that is not a (n, dim) array: {exc}") from exc
    expected = (len(texts), dim)
    if arr.shape != expected:
        raise InvalidValue(f"embedder {who} returned shape {arr.shape}, expected {expected} "
                           f"({len(texts)} texts x dim {dim})")
    if arr.dtype.kind not in "iuf":
        raise InvalidValue(f"embedder {who} returned dtype {arr.dtype}, expected numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise InvalidValue(f"embedder {who} returned a non-finite value {float(arr[row, col])!r} at row {row}, "
                           f"column {col} (NaN or infinity, or too large for float32)")
    return out


def _check_texts(texts: Any, who: str) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, (list, tuple)):
        raise InvalidArgument(f"{who}: texts must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidArgument(f"{who}: texts[{i}] must be a str, got {type(text).__name__}")
    return list(texts)


def _embedder_name(embedder: Any) -> str:
    name = getattr(embedder, "name", None)
    if isinstance(name, str) and name:
        return repr(name)
    return getattr(embedder, "__qualname__", None) or type(embedder).__qualname__


def _sizes(what: str, sizes: Any, *, allow_empty: bool) -> tuple[int, ...]:
    try:
        out = tuple(sizes)
    except TypeError:
        raise InvalidArgument(f"HashingEmbedder {what} must be a tuple of ints >= 1, got {sizes!r}") from None
    if (not out and not allow_empty) or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in out):
        raise InvalidArgument(f"HashingEmbedder {what} must be a {'' if allow_empty else 'non-empty '}"
                              f"tuple of ints >= 1, got {sizes!r}")
    return out
