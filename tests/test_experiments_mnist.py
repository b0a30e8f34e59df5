"""Smoke tests of the MNIST experiments (experiments/mnist_*.py), in-process with ``--smoke``.

They load the committed model ``experiments/results/mnist_cnn.h5`` (never retrain) and the
shared MNIST data (skipped when ``../shared/data`` is absent), write into a temporary folder
and check real properties of what the scripts computed.
"""
import importlib

import numpy as np
import pytest


def _module(name):
    return importlib.import_module(f"experiments.{name}")


@pytest.fixture(scope="module")
def mnist(shared_data):
    path = shared_data / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def variables():
    mc = _module("mnist_common")
    return mc.load_model(mc.MODEL_H5)


@pytest.fixture(scope="module")
def benchmark_run(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    bench = _module("mnist_benchmark")
    assert bench.main(["--smoke", "--save-scores", "--data", str(mnist), "--out", str(out)]) == 0
    return out


def test_committed_model_is_accurate(mnist, variables):
    mc = _module("mnist_common")
    x, y = mc.load_mnist(mnist, "test")
    acc = mc.accuracy(variables, x[:400], y[:400])
    assert acc > 0.1 + 0.5  # far above chance (0.1)
    assert acc >= 0.97


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_benchmark_writes_every_method(benchmark_run):
    bench = _module("mnist_benchmark")
    md = (benchmark_run / "mnist_benchmark.md").read_text()
    for m in bench.methods():
        assert f"| {m.name} |" in md, m.name
    for png in ("mnist_benchmark_box.png", "mnist_heatmaps.png"):
        assert (benchmark_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_benchmark_deeplift_sums_to_delta(benchmark_run, variables):
    mc = _module("mnist_common")
    d = np.load(benchmark_run / "mnist_benchmark_scores.npz")
    for c in (8, 9, 4):
        x = d[f"x_{c}"]
        delta = mc.predict_logits(variables, x) - mc.predict_logits(variables, np.zeros_like(x))
        for method in ("deeplift_rescale", "deeplift_revealcancel"):
            s = d[f"scores_{method}_{c}"]                       # (N, 10, 28, 28, 1)
            assert s.shape == (len(x), 10) + x.shape[1:]
            np.testing.assert_allclose(s.reshape(len(x), 10, -1).sum(-1), delta,
                                       atol=2e-3, rtol=1e-4)
            # zero reference: no score where the input equals the reference
            assert np.all(s[np.broadcast_to(x[:, None] == 0, s.shape)] == 0)


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_benchmark_deeplift_beats_random(benchmark_run):
    d = np.load(benchmark_run / "mnist_benchmark_scores.npz")

    def mean_change(slug):
        return np.mean(np.concatenate([d[k] for k in d.files if k.startswith(f"change_{slug}_")]))

    rnd = mean_change("random_control")
    assert mean_change("deeplift_revealcancel") > rnd + 1.0
    assert mean_change("deeplift_rescale") > rnd + 1.0


def test_erase_mask_takes_top_positive_pixels():
    bench = _module("mnist_benchmark")
    s = np.array([[3.0, -1.0, 0.0, 5.0, 2.0, 1.0]])
    assert bench.erase_mask(s, max_erased=2).tolist() == [[True, False, False, True, False,
                                                            False]]
    assert bench.erase_mask(s, max_erased=10).tolist() == [[True, False, False, True, True,
                                                             True]]


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_references_smoke(mnist, tmp_path, variables):
    refs = _module("mnist_references")
    mc = _module("mnist_common")
    assert refs.main(["--smoke", "--data", str(mnist), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "mnist_references.png").stat().st_size > 1000
    md = (tmp_path / "mnist_references.md").read_text()
    for name in ("zeros", "blurred", "shuffled", "near-uniform"):
        assert name in md
    near = np.load(tmp_path / "mnist_near_uniform_refs.npz")
    p = np.exp(mc.predict_logits(variables, near["refs"]))
    p /= p.sum(-1, keepdims=True)
    x_train, _ = mc.load_mnist(mnist, "train")
    p_all = np.exp(mc.predict_logits(variables, x_train[:2000]))
    p_all /= p_all.sum(-1, keepdims=True)
    # the chosen references are the least confident of the searched digits
    assert p.max(-1).max() <= np.sort(p_all.max(-1))[len(p)] + 1e-5


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_concepts_smoke(mnist, tmp_path):
    con = _module("mnist_concepts")
    assert con.main(["--smoke", "--data", str(mnist), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "mnist_concepts.png").stat().st_size > 1000
    md = (tmp_path / "mnist_concepts.md").read_text()
    assert "Essence" in md and "| 9 | 4 |" in md
