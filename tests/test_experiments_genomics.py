"""Tests of ``experiments/genomics.py`` (issue 18): the simulated motifs and their recorded
positions, the ground-truth measures, the profile target with fixed weights (exact DeepLIFT),
hypothetical contributions of a dict input, and the whole study at its quick settings."""
import importlib

import jax
import numpy as np
import pytest

import jaxlift


def _module(name):
    return importlib.import_module(f"experiments.{name}")


@pytest.fixture(scope="module")
def gen():
    return _module("genomics")


def _small(gen):
    return gen.Config(length=200, channels=4, n_dilated=2, clf_hidden=3)


def test_planted_motifs_are_where_recorded_and_labels_follow_the_grammar(gen):
    cfg = _small(gen)
    d = gen.make_data(60, cfg, np.random.default_rng(0))
    x = d["x"]
    assert x.shape == (60, 200, 4) and np.all(x.sum(-1) == 1)
    names = list(gen.MOTIFS)
    spans = np.zeros((60, 200), bool)
    llr = []
    for i in range(60):
        for j, name in enumerate(names):
            s = d["start"][i, j]
            assert (s >= 0) == d["present"][i, j]
            if s < 0:
                continue
            pwm = gen.PWMS[name]
            site = x[i, s: s + len(pwm)]
            # log-likelihood ratio of the site: its PWM (better strand) over the background
            ll = max(np.log((site * p).sum(1)).sum()
                     for p in (pwm, gen.reverse_complement(pwm)))
            llr.append(ll - np.log((site * gen.BACKGROUND).sum(1)).sum())
            assert not spans[i, s: s + len(pwm)].any()          # no overlap
            spans[i, s: s + len(pwm)] = True
    np.testing.assert_array_equal(spans, d["truth"])
    # sites are drawn from their PWMs (0.85 per consensus letter): almost all score well above
    # the background, on average by several nats
    assert np.mean(np.array(llr) > 0) > 0.9 and np.mean(llr) > 4, np.mean(llr)
    np.testing.assert_array_equal(d["label"], d["present"][:, 0] & d["present"][:, 1])
    assert 0 < d["label"].mean() < 0.5
    np.testing.assert_array_equal(d["counts"].sum(1), d["total"])
    # reads pile up on the motifs: a planted position gets more reads than a background one
    assert d["counts"][d["truth"]].mean() > 3 * d["counts"][~d["truth"]].mean()


def test_consensus_pwm_and_measures(gen):
    pwm = gen.consensus_pwm("AS")
    np.testing.assert_allclose(pwm.sum(1), 1)
    np.testing.assert_allclose(pwm[0], [0.85, 0.05, 0.05, 0.05])
    np.testing.assert_allclose(pwm[1], [0.075, 0.425, 0.425, 0.075])
    truth = np.zeros((2, 30), bool)
    truth[0, 10:14] = truth[1, 3:6] = True
    perfect = truth.astype(float)
    m = gen.ground_truth_metrics(perfect, truth, window=4)
    assert m["auroc"] == 1 and m["auprc"] == 1 and m["top_window"] == 1
    flipped = gen.ground_truth_metrics(-perfect, truth, window=4)
    assert flipped["auroc"] == 0 and flipped["top_window"] == 0
    assert gen.window_hits(np.eye(30)[[20, 5]], truth, 3).tolist() == [False, True]
    # position scores: a contribution sums over the alphabet; mean-centred ISM (zero sum per
    # position) is read at the observed letter
    x = np.eye(4)[[0, 2]]
    s = np.array([[1.0, -0.5, 0, 0], [-1.0, 0, 3.0, -2.0]])
    np.testing.assert_allclose(gen.position_scores(s, x, observed_only=False), [0.5, 0.0])
    np.testing.assert_allclose(gen.position_scores(s, x, observed_only=True), [1.0, 3.0])


@pytest.mark.slow  # test budget: the library path is in tests/test_genomics_lib.py
def test_profile_target_with_fixed_weights_is_exact_through_hypothetical_scores(gen, x64):
    cfg = _small(gen)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                    gen.init_params(cfg, jax.random.key(1)))
    d = gen.make_data(3, cfg, np.random.default_rng(2))
    refs = gen.shuffles(d["x"], 4, seed=5).astype(np.float64)
    xw, rw = gen.explain_inputs(params, d["x"].astype(np.float64), refs)
    np.testing.assert_array_equal(rw["w"][:, 2], xw["w"])      # the references keep w(x)
    hyp = jaxlift.hypothetical_contributions(gen.profile_explained, params, xw, rw,
                                             sequence_key="seq")
    assert hyp.shape == d["x"].shape
    # Δt of each pair is Σ w(x)·(Δl − mean Δl): the input's weights on both sides
    logits = lambda s: np.asarray(gen.bpnet_apply(params, s)["profile"])   # noqa: E731
    lx, w = logits(xw["seq"]), xw["w"]
    centred = lambda l: l - l.mean(1, keepdims=True)                        # noqa: E731
    delta = np.stack([(w * (centred(lx) - centred(logits(refs[:, k])))).sum(1)
                      for k in range(4)], 1)
    assert np.abs(delta).min() > 1e-4                           # the check has teeth
    # at the observed letters the hypothetical scores are the contributions, and DeepLIFT is
    # exact: they sum to the mean Δt over the references (w gets no credit: Δw = 0)
    np.testing.assert_allclose((hyp * xw["seq"]).sum((1, 2)), delta.mean(1), rtol=1e-9,
                               atol=1e-12)
    with pytest.raises(ValueError, match="sequence_key 'dna' needs x and refs to be dicts"):
        jaxlift.hypothetical_contributions(gen.profile_explained, params, xw, rw,
                                           sequence_key="dna")


@pytest.mark.slow  # the whole study at quick settings (~2 min on 2 cores)
def test_quick_study(gen, tmp_path):
    res = gen.main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / "genomics.md").read_text()
    assert (tmp_path / "genomics_logo.png").stat().st_size > 10_000
    assert (tmp_path / "genomics_model.npz").exists()
    for label, r in res["methods"].items():
        assert f"| {label} |" in text
        assert r["scores"].shape == res["x"].shape and np.isfinite(r["scores"]).all()
        assert 0 <= r["auroc"] <= 1 and r["per_1000"] > 0
    for mode in ("rescale", "genomics_default", "reveal_cancel"):
        r = res["methods"][f"DeepLIFT {mode}"]
        # exact per pair: float32 rounding of a Δt of order 1
        assert r["gap_max"] < 1e-3 * max(1.0, r["delta_abs_median"]), (mode, r["gap_max"])
    # stop_gradient is the identity to jaxlift: BPNet's target written literally is another
    # function (the weights move with each reference), exact for itself, with another Δt
    params, x, refs = res["params"], res["x"][:2], res["refs"][:2]
    lit, d_lit = jaxlift.attribute(gen.profile_literal, params, x, refs, mode="rescale",
                                   average_refs=False, return_delta=True)
    _, d_fixed = jaxlift.attribute(gen.profile_explained, params, {"seq": x, "w": res["w"][:2]},
                                   {"seq": refs, "w": np.repeat(res["w"][:2, None], 20, 1)},
                                   mode="rescale", average_refs=False, return_delta=True)
    np.testing.assert_allclose(np.asarray(lit).sum((2, 3)), d_lit, rtol=1e-3, atol=1e-4)
    assert np.abs(np.asarray(d_lit) - np.asarray(d_fixed)).max() > 1e-3
    # even the quick model finds the motifs better than chance
    assert res["methods"]["DeepLIFT rescale"]["auroc"] > 0.6
