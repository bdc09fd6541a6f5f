"""Full-text index kept in the store: a tokenizer, an inverted index under a caller's key prefix, BM25 search.

This module owns the tokenizer and the byte layout of one inverted index
below a key prefix ``base`` that its caller (a primitive, e.g. the memory
graph) owns. Every read and write goes through a
:class:`~inmem.primitives.context.Context`, so the index is transactional,
snapshotted, replayed and forked exactly as the caller's own records are —
written in the same commit as the document it indexes.

Invariant: for every indexed document ``d`` with term frequencies ``tf``
and length ``dl = sum(tf.values())``, the index holds exactly one posting
per term of ``tf`` and nothing else for ``d``; the stats record holds
``[number of documents, sum of their lengths]`` (:func:`check_index`
recomputes both and the postings from the document records).

Keys (SPEC.md §2 "Full-text index")::

    base | 't' | term (UTF-8) | 0x00 | doc id (UTF-8)   -> CBOR [tf, dl]   posting
    base | 'd' | doc id (UTF-8)                           -> CBOR {"len": dl, "tf": {term: tf}}
    base | 's'                                            -> CBOR [N, total length]  corpus stats
    base | 'm'                                            -> CBOR {"stem": bool}     tokenizer setting

A term never contains 0x00 (it is made of ``\\w`` characters) and a doc id
may not, so one term's postings are the contiguous range
``base | 't' | term | 0x00 ...``: its document frequency is the length of
that range scan. The posting repeats the document length ``dl`` so a query
scores from its postings alone (no point read per candidate); a document
whose length changes rewrites all its postings, which re-indexing does
anyway (O(terms of the document)).

Concurrency choice: the corpus stats are one key, but it is updated only by
a **blind merge** (:meth:`Context.merge` with :class:`StatsOperator`, adding
``(+-1, +-dl)``), so indexing transactions never read it and never conflict
on it; they conflict only when they index the same document (each reads
that document's record to diff old against new terms). A ``search`` reads
the stats key (one point read: N and avgdl in O(1)), so it is validated
against concurrent indexing like any read. The alternative — deriving N and
avgdl by scanning every document record — costs O(N) per query; a plain
read-modify-write counter would make every pair of indexing transactions
conflict. The tokenizer-setting record ``base | 'm'`` (``{"stem": bool}``)
is written once, by the first indexing, and only read afterwards: at most
the first two concurrent indexers of an empty index conflict on it.

Tokenizer (:func:`tokenize`): NFKC normalisation, then ``str.casefold``
(then NFKC again, approximating Unicode's NFKC_Casefold), then the maximal
runs of ``re``'s Unicode ``\\w`` (letters, digits, marks, connector
punctuation such as ``_``) — an approximation of Unicode word boundaries,
not UAX #29: ``don't`` gives ``don``, ``t``; a run of CJK ideographs is one
token. Tokens longer than :data:`MAX_TERM_CHARS` characters are cut to that
length. An optional trivial English suffix stripper (``stem=True``, off by
default) removes one of ``ing``, ``ed``, ``es``, ``s`` when at least three
characters remain; the index stores the stemming choice and refuses a
mismatched call.

Scoring (:func:`search`): Okapi BM25 (Robertson & Zaragoza 2009, "The
Probabilistic Relevance Framework: BM25 and Beyond", eq. 3.15) with the
Lucene idf ``log(1 + (N - n + 0.5) / (n + 0.5))`` (always positive)::

    score(d, q) = sum over distinct terms t of q present in d of
                  idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))

with k1 = 1.2, b = 0.75. A query matches a document holding ANY of its
terms (OR); ties break by doc id (code-point order).
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from typing import Any

from .codec import decode_value, encode_record, encode_value
from .errors import CorruptionError, InvalidArgument
from .keys import name_bytes, prefix_end
from .primitives.context import Context

__all__ = ["B", "K1", "MAX_DOC_ID_BYTES", "MAX_TERM_CHARS", "StatsOperator", "bm25", "check_index", "doc_terms",
           "configure", "index_doc", "index_stem", "search", "stem_token", "term_frequencies", "tokenize", "unindex_doc"]

#: BM25 parameters (Robertson & Zaragoza 2009; Lucene's defaults).
K1 = 1.2
B = 0.75
#: Longest term kept, in characters; longer tokens are cut to it.
MAX_TERM_CHARS = 64
#: Longest document id, in bytes of UTF-8.
MAX_DOC_ID_BYTES = 1024

_POST = b"t"
_DOC = b"d"
_STATS = b"s"
_META = b"m"
_WORD = re.compile(r"\w+")
_SUFFIXES = ("ing", "ed", "es", "s")


def stem_token(token: str) -> str:
    """The trivial stemmer: strip the first of ``ing``, ``ed``, ``es``, ``s`` that leaves >= 3 characters. O(1)."""
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def tokenize(text: str, *, stem: bool = False) -> list[str]:
    """The terms of ``text``, in order, repeats kept (see the module docstring for the rules). O(len(text)).

    :raises InvalidArgument: ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"text to index is a str, got {type(text).__name__}")
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    tokens = [t[:MAX_TERM_CHARS] for t in _WORD.findall(folded)]
    return [stem_token(t) for t in tokens] if stem else tokens


def term_frequencies(text: str, *, stem: bool = False) -> dict[str, int]:
    """``{term: count}`` of :func:`tokenize` ``(text)``. O(len(text))."""
    out: dict[str, int] = {}
    for t in tokenize(text, stem=stem):
        out[t] = out.get(t, 0) + 1
    return out


class StatsOperator:
    """Blind merge of the corpus stats ``[N, total length]``: each op is ``(dn, dlen)``, added. Deletes at N = 0."""

    def start(self, value: bytes | None) -> list[int]:
        if value is None:
            return [0, 0]
        state = decode_value(value)
        if not (isinstance(state, list) and len(state) == 2 and all(type(x) is int for x in state)):
            raise CorruptionError("full-text corpus stats record is not [N, total length]")
        return state

    def step(self, state: list[int], op: tuple[int, int]) -> list[int]:
        return [state[0] + op[0], state[1] + op[1]]

    def finish(self, state: list[int], ops: list[Any]) -> bytes | None:
        return None if state[0] == 0 else encode_record(state, False)  # type: ignore[arg-type]


_STATS_OP = StatsOperator()


def _check_base(base: object) -> bytes:
    if not isinstance(base, bytes) or not base:
        raise InvalidArgument(f"a full-text index prefix is non-empty bytes, got {base!r:.80}")
    return base


def _doc_bytes(doc_id: object) -> bytes:
    return name_bytes(doc_id, "full-text document", MAX_DOC_ID_BYTES)


def _posting_key(base: bytes, term: str, did: bytes) -> bytes:
    return base + _POST + term.encode() + b"\x00" + did


def _posting_value(tf: int, dl: int) -> bytes:
    """CBOR ``[tf, dl]``: assembled directly when both fit a one-byte head (< 24), else by cbor2."""
    if tf < 24 and dl < 24:
        return bytes((0x82, tf, dl))
    return encode_record([tf, dl], False)  # type: ignore[arg-type]


def _load_doc(ctx: Context, key: bytes) -> dict[str, Any] | None:
    entry = ctx.lookup(key)
    if entry is None:
        return None
    rec = decode_value(entry[1])
    if not (isinstance(rec, dict) and type(rec.get("len")) is int and isinstance(rec.get("tf"), dict)):
        raise CorruptionError(f"full-text document record {key!r:.120} is not {{len, tf}}")
    return rec


def _check_stem(ctx: Context, run: str | None, base: bytes, stem: bool | None) -> bool:
    """The stemming choice to use, in one point read: the index's (``stem=None``: whatever it was built
    with, False for a new one), refusing a ``stem`` other than it; recorded on the first write (``run``)."""
    entry = ctx.lookup(base + _META)
    if entry is None:
        if run is not None:
            ctx.write(run, base + _META, encode_value({"stem": bool(stem)}))
        return bool(stem)
    built = bool(decode_value(entry[1]).get("stem"))
    if stem is not None and built != bool(stem):
        raise InvalidArgument(f"this full-text index was built with stem={built}; call with the same setting")
    return built


def index_stem(ctx: Context, base: bytes) -> bool | None:
    """The stemming choice the index under ``base`` was built with, or None if none was recorded yet. One point read."""
    entry = ctx.lookup(_check_base(base) + _META)
    return None if entry is None else bool(decode_value(entry[1]).get("stem"))


def configure(ctx: Context, run: str, base: bytes, *, stem: bool) -> None:
    """Record the stemming choice of the (empty or not) index under ``base``; idempotent.

    :raises InvalidArgument: the index was built with the other choice (it cannot change: its
        postings hold stemmed or unstemmed terms), or a bad ``base`` — before anything is written.
    """
    base = _check_base(base)
    ctx.check_run(run, write=True)
    _check_stem(ctx, run, base, bool(stem))


def index_doc(ctx: Context, run: str, base: bytes, doc_id: str, text: str, *, stem: bool | None = False) -> bool:
    """Index (or re-index) ``doc_id`` with ``text`` under ``base``, in ``ctx``'s commit; return whether anything changed.

    Diffs against the stored record: postings of terms no longer present are
    deleted, the others written (all of them if the length changed). Reads
    the document's own record (a transaction conflicts only with another
    writer of the same document) and merges the stats blindly. O(terms of
    the old and new text) writes.

    :raises InvalidArgument: ``base`` not non-empty bytes, ``doc_id`` not a
        non-empty str without NUL of at most :data:`MAX_DOC_ID_BYTES`,
        ``text`` not a str, or ``stem`` differs from the index's — before
        anything is written. ``stem=None``: the index's own setting.
    """
    base = _check_base(base)
    did = _doc_bytes(doc_id)
    if not isinstance(text, str):
        raise InvalidArgument(f"text to index is a str, got {type(text).__name__}")
    ctx.check_run(run, write=True)
    tf = term_frequencies(text, stem=_check_stem(ctx, run, base, stem))
    dkey = base + _DOC + did
    old = _load_doc(ctx, dkey)
    dl = sum(tf.values())
    old_tf: dict[str, int] = old["tf"] if old else {}
    old_dl = old["len"] if old else 0
    if old is not None and old_dl == dl and old_tf == tf:
        return False
    writes: list[tuple[bytes, bytes | None]] = [(_posting_key(base, t, did), None) for t in old_tf.keys() - tf.keys()]
    for term, n in tf.items():
        if old_dl != dl or old_tf.get(term) != n:
            writes.append((_posting_key(base, term, did), _posting_value(n, dl)))
    writes.append((dkey, encode_record({"len": dl, "tf": tf}, False)))
    ctx.write_batch(run, writes)
    ctx.merge(run, base + _STATS, _STATS_OP, (0 if old is not None else 1, dl - old_dl))
    return True


def unindex_doc(ctx: Context, run: str, base: bytes, doc_id: str) -> bool:
    """Remove ``doc_id`` and all its postings from the index under ``base``; return whether it was indexed.

    O(terms of the document) writes. :raises InvalidArgument: as :func:`index_doc`.
    """
    base = _check_base(base)
    did = _doc_bytes(doc_id)
    ctx.check_run(run, write=True)
    dkey = base + _DOC + did
    old = _load_doc(ctx, dkey)
    if old is None:
        return False
    ctx.write_batch(run, [(_posting_key(base, term, did), None) for term in old["tf"]] + [(dkey, None)])
    ctx.merge(run, base + _STATS, _STATS_OP, (-1, -old["len"]))
    return True


def doc_terms(ctx: Context, base: bytes, doc_id: str) -> dict[str, int] | None:
    """``{term: tf}`` stored for ``doc_id``, or None if it is not indexed. One point read."""
    old = _load_doc(ctx, _check_base(base) + _DOC + _doc_bytes(doc_id))
    return None if old is None else dict(old["tf"])


def bm25(tf: int, dl: int, n: int, N: int, avgdl: float, *, k1: float = K1, b: float = B) -> float:
    """One term's BM25 contribution (module docstring formula). ``n``: documents holding the term; ``N``: all."""
    idf = math.log(1.0 + (N - n + 0.5) / (n + 0.5))
    return idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl))


def search(ctx: Context, base: bytes, query: str, *, k: int = 10, stem: bool | None = False,
           k1: float = K1, b: float = B) -> list[tuple[str, float]]:
    """The top ``k`` ``(doc id, BM25 score)`` for ``query``, best first, ties by doc id.

    Reads the stats record (N, avgdl) and one posting range per distinct
    query term (the range's length is the term's document frequency), all
    through ``ctx`` so a transaction records them. O(log n + sum of the
    terms' document frequencies + k log k). An empty index or a query
    without terms gives ``[]``.

    :raises InvalidArgument: ``base`` not non-empty bytes, ``query`` not a
        str, ``k`` not a positive int, or ``stem`` differs from the index's
        (``stem=None``: the index's own setting).
    """
    base = _check_base(base)
    if type(k) is not int or k < 1:
        raise InvalidArgument(f"k is a positive int, got {k!r:.40}")
    if not isinstance(query, str):
        raise InvalidArgument(f"text to index is a str, got {type(query).__name__}")
    terms = sorted(set(tokenize(query, stem=_check_stem(ctx, None, base, stem))))
    entry = ctx.lookup(base + _STATS)
    if not terms or entry is None:
        return []
    N, total = _STATS_OP.start(entry[1])
    if N <= 0 or total <= 0:
        return []
    avgdl = total / N
    scores: dict[bytes, float] = {}
    for term in terms:
        lo = base + _POST + term.encode() + b"\x00"
        rows = ctx.scan(lo, prefix_end(lo))
        if not rows:
            continue
        n = len(rows)
        idf = math.log(1.0 + (N - n + 0.5) / (n + 0.5))
        skip = len(lo)
        for key, value in rows:
            tf, dl = decode_value(value)
            s = idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl))
            did = key[skip:]
            scores[did] = scores.get(did, 0.0) + s
    best = heapq.nsmallest(k, scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(did.decode(), score) for did, score in best]


def check_index(ctx: Context, base: bytes) -> list[str]:
    """Problems with the index under ``base`` (empty: consistent): postings, lengths and stats
    recomputed from the document records. O(size of the index). For ``inmem verify`` and tests."""
    base = _check_base(base)
    problems: list[str] = []
    for key, _ in ctx.scan(base, prefix_end(base)):
        rest = key[len(base):]
        if not (rest[:1] in (_POST, _DOC) and len(rest) > 1 or rest in (_STATS, _META)):
            problems.append(f"malformed full-text index key {rest[:80]!r}")
    want: dict[bytes, list[int]] = {}
    N = total = 0
    dlo = base + _DOC
    for key, value in ctx.scan(dlo, prefix_end(dlo)):
        did = key[len(dlo):]
        try:
            rec = decode_value(value)
        except CorruptionError:
            rec = None
        if not (isinstance(rec, dict) and type(rec.get("len")) is int and isinstance(rec.get("tf"), dict)):
            problems.append(f"document {did!r}: record is not {{len, tf}}")
            continue
        N += 1
        total += rec["len"]
        if sum(rec["tf"].values()) != rec["len"]:
            problems.append(f"document {did!r}: length {rec['len']} is not the sum of its term frequencies")
        for term, n in rec["tf"].items():
            want[_posting_key(base, term, did)] = [n, rec["len"]]
    plo = base + _POST
    have: dict[bytes, Any] = {}
    for key, value in ctx.scan(plo, prefix_end(plo)):
        try:
            have[key] = list(decode_value(value))
        except (CorruptionError, TypeError):
            have[key] = None
    for key in sorted(want.keys() - have.keys()):
        problems.append(f"missing posting {key[len(plo):]!r}")
    for key in sorted(have.keys() - want.keys()):
        problems.append(f"stale posting {key[len(plo):]!r}")
    for key in sorted(want.keys() & have.keys()):
        if have[key] != want[key]:
            problems.append(f"posting {key[len(plo):]!r} holds {have[key]}, the document says {want[key]}")
    entry = ctx.lookup(base + _STATS)
    try:
        stats = [0, 0] if entry is None else _STATS_OP.start(entry[1])
    except CorruptionError:
        stats = None  # type: ignore[assignment]
    if stats != [N, total]:
        problems.append(f"corpus stats say {stats}, the documents {[N, total]}")
    return problems
