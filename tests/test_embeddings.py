"""Embedders (inmem.embeddings): the hashing embedder's determinism, normalisation and
similarity, and embed()'s shape/finiteness checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

np = pytest.importorskip("numpy")

from inmem.embeddings import Embedder, HashingEmbedder, embed, require_numpy  # noqa: E402
from inmem.errors import InvalidArgument, InvalidValue  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["the cat sat on the mat", "a cat on a mat", "quarterly revenue grew", "Ünïcode wörds ok"]


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_output_is_float32_c_contiguous_and_unit_length():
    e = HashingEmbedder()
    out = e(TEXTS)
    assert out.dtype == np.float32 and out.shape == (4, 256) and out.flags["C_CONTIGUOUS"]
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert e.dim == 256 and e.name == "hashing-256"


@pytest.mark.parametrize("dim", [1, 7, 1024])
def test_dim_is_respected(dim):
    out = HashingEmbedder(dim)(TEXTS)
    assert out.shape == (len(TEXTS), dim)
    assert np.allclose(np.abs(out).sum(axis=1) > 0, True)


def test_empty_and_wordless_texts_give_the_zero_vector():
    out = HashingEmbedder(64)(["", "   ", "!!! ...", "word"])
    assert not out[:3].any()
    assert np.isclose(np.linalg.norm(out[3]), 1.0)
    assert HashingEmbedder(8)([]).shape == (0, 8)


def test_similar_texts_are_closer():
    e = HashingEmbedder()
    cat, cat2, revenue = e(TEXTS[:3])
    assert cos(cat, cat2) > 0.2
    assert cos(cat, cat2) > cos(cat, revenue) + 0.2


def test_case_and_punctuation_do_not_matter_but_order_does():
    e = HashingEmbedder()
    a, b, c = e(["The Cat, sat!", "the cat sat", "sat the cat"])
    assert np.array_equal(a, b)
    assert not np.array_equal(b, c)  # bigrams differ
    u, v = HashingEmbedder(ngrams=(1,))(["the cat sat", "sat the cat"])
    assert np.array_equal(u, v)  # unigrams only: a bag of words


def test_char_trigrams_make_inflections_overlap():
    words = ["cats", "cat"]
    plain = HashingEmbedder(1024, ngrams=(1,))(words)
    tri = HashingEmbedder(1024, ngrams=(1,), char_ngrams=(3,))(words)
    assert cos(tri[0], tri[1]) > cos(plain[0], plain[1]) + 0.3


def test_parameters_change_the_space_and_the_name():
    base = HashingEmbedder(128)
    assert base.name == "hashing-128"
    assert HashingEmbedder(128, seed=7).name == "hashing-128-s7"
    assert HashingEmbedder(128, ngrams=(1, 2, 3), char_ngrams=(3,)).name == "hashing-128-w1,2,3-c3"
    assert not np.array_equal(base(TEXTS), HashingEmbedder(128, seed=7)(TEXTS))
    assert np.array_equal(base(TEXTS), HashingEmbedder(128)(TEXTS))


def test_same_vectors_in_another_process_with_another_hash_seed():
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from tests.checkout import use_checkout
        use_checkout()
        from inmem.embeddings import HashingEmbedder
        sys.stdout.write(HashingEmbedder(64, char_ngrams=(3,), seed=5)({TEXTS!r}).tobytes().hex())
    """)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    child = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    here = HashingEmbedder(64, char_ngrams=(3,), seed=5)(TEXTS)
    assert bytes.fromhex(child.stdout) == here.tobytes()


def test_pinned_vector_never_changes():
    # the bucket and sign of a feature are part of every stored collection: pin one row
    row = HashingEmbedder(16)(["hello world"])[0]
    nonzero = {int(i): round(float(row[i]), 4) for i in np.flatnonzero(row)}
    assert nonzero == PINNED_HELLO_WORLD


PINNED_HELLO_WORLD = {0: 0.5774, 2: -0.5774, 14: -0.5774}  # "hello", "world", "hello world": 3 buckets


@pytest.mark.parametrize("kwargs", [
    {"dim": 0}, {"dim": -3}, {"dim": True}, {"dim": 2.0}, {"ngrams": ()}, {"ngrams": (0,)},
    {"ngrams": ("1",)}, {"ngrams": 2}, {"char_ngrams": (True,)}, {"seed": -1}, {"seed": 2**64}, {"seed": 1.5},
])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        HashingEmbedder(**kwargs)


@pytest.mark.parametrize("texts", ["a bare string", [b"bytes"], ["ok", None], {"a"}])
def test_texts_must_be_a_list_of_str(texts):
    with pytest.raises(InvalidArgument):
        HashingEmbedder()(texts)
    with pytest.raises(InvalidArgument):
        embed(HashingEmbedder(), texts, 256)


def test_embedder_protocol():
    assert isinstance(HashingEmbedder(), Embedder)
    assert isinstance(lambda texts: [[0.0]] * len(texts), Embedder)
    assert not isinstance("not callable", Embedder)


def test_embed_converts_to_c_contiguous_float32():
    def lists(texts):
        return [[1, 2, 3] for _ in texts]

    out = embed(lists, ["a", "b"], 3)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"] and out.tolist() == [[1, 2, 3], [1, 2, 3]]

    def fortran(texts):
        return np.asfortranarray(np.ones((len(texts), 4), dtype=np.float64))

    assert embed(fortran, ["a", "b", "c"], 4).flags["C_CONTIGUOUS"]
    e = HashingEmbedder(32)
    assert np.array_equal(embed(e, TEXTS, 32), e(TEXTS))


def test_embed_of_no_texts_does_not_call_the_embedder():
    def boom(texts):
        raise AssertionError("called")

    assert embed(boom, [], 5).shape == (0, 5)


@pytest.mark.parametrize("output,phrase", [
    (np.ones((2, 4)), "shape (2, 4), expected (2, 3)"),
    (np.ones((3, 3)), "shape (3, 3), expected (2, 3)"),
    (np.ones(6), "shape (6,), expected (2, 3)"),
    (np.ones((2, 3, 1)), "shape (2, 3, 1)"),
    ([[1, 2, 3], [1, 2]], "not a (n, dim) array"),
    ([["a", "b", "c"]] * 2, "dtype <U1, expected numbers"),
    (np.array([[1, 2, 3], [1, np.nan, 3]]), "non-finite value nan at row 1, column 1"),
    (np.array([[np.inf, 2, 3], [1, 2, 3]]), "non-finite value inf at row 0, column 0"),
    (np.array([[1, 2, 3], [1, 2, 1e300]]), "too large for float32"),
    (None, "shape ()"),
])
def test_embed_refuses_bad_output_naming_the_embedder(output, phrase):
    class Model:
        name = "my-model"

        def __call__(self, texts):
            return output

    with pytest.raises(InvalidValue) as info:
        embed(Model(), ["x", "y"], 3)
    assert "'my-model'" in str(info.value) and phrase in str(info.value), str(info.value)

    def plain_function(texts):
        return output

    with pytest.raises(InvalidValue, match="plain_function"):
        embed(plain_function, ["x", "y"], 3)


def test_embed_refuses_a_bad_dim():
    for dim in (0, -1, 3.0, True):
        with pytest.raises(InvalidArgument):
            embed(HashingEmbedder(), ["x"], dim)


def test_embedder_exceptions_propagate():
    def failing(texts):
        raise ConnectionError("model server down")

    with pytest.raises(ConnectionError):
        embed(failing, ["x"], 3)


def test_require_numpy_says_how_to_install(monkeypatch):
    assert require_numpy() is np
    monkeypatch.setitem(sys.modules, "numpy", None)  # makes `import numpy` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'inmem\[vectors\]'"):
        require_numpy()
    with pytest.raises(ImportError, match=r"pip install 'inmem\[vectors\]'"):
        HashingEmbedder()(["x"])
