"""Tests of ``experiments/sequences.py`` (issue 15): the planted-order token data, the
top-k measure, and the whole study at its quick settings."""
import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def seq():
    return importlib.import_module("experiments.sequences")


def test_planted_positions_hold_the_tokens_and_labels_follow_the_order(seq):
    cfg = seq.Config()
    d = seq.make_data(600, cfg, np.random.default_rng(1))
    ids, rows = d["ids"], np.arange(600)
    has_a, has_b = d["pos_a"] >= 0, d["pos_b"] >= 0
    # the truth positions hold A and B, and A and B occur nowhere else
    assert np.all(ids[rows[has_a], d["pos_a"][has_a]] == seq.TOKEN_A)
    assert np.all(ids[rows[has_b], d["pos_b"][has_b]] == seq.TOKEN_B)
    assert np.array_equal((ids == seq.TOKEN_A).sum(1), has_a.astype(int))
    assert np.array_equal((ids == seq.TOKEN_B).sum(1), has_b.astype(int))
    # the label is the order rule read off the tokens, and agrees with the positions
    assert np.array_equal(d["label"], seq.order_rule(ids))
    assert np.array_equal(d["label"], (has_a & has_b & (d["pos_a"] < d["pos_b"])).astype(int))
    # every kind of negative occurs (only A, only B, reversed), and the classes are balanced
    neg = d["label"] == 0
    assert (has_a & ~has_b).any() and (~has_a & has_b).any() and (has_a & has_b & neg).any()
    assert 0.4 < d["label"].mean() < 0.6
    # pads are exactly the tail beyond each length; planted tokens lie inside it
    t = np.arange(cfg.length)[None, :]
    assert np.array_equal(ids == seq.PAD, t >= d["length"][:, None])
    assert np.all(d["pos_a"] < d["length"]) and np.all(d["pos_b"] < d["length"])


def test_top_k_signed_and_by_magnitude(seq):
    tok = np.array([[5.0, -9.0, 4.0, 0.1], [0.0, 3.0, 2.0, 1.0]])
    truth = np.array([[0, 2], [1, 2]])
    # signed toward class 1: tokens 0 and 2 of the first row, 1 and 2 of the second
    assert seq.top_k_hits(tok, truth, np.array([1.0, 1.0])).tolist() == [True, True]
    # by magnitude the −9 of the first row enters the top 2
    assert seq.top_k_hits(tok, truth, None).tolist() == [False, True]
    # toward class 0 the ranking flips
    assert seq.top_k_hits(tok, truth, np.array([-1.0, -1.0])).tolist() == [False, False]
    assert seq.chance_top_k(np.array([4, 4]), 2) == pytest.approx(1 / 6)
    np.testing.assert_allclose(seq.planted_share(tok, truth), [9 / 18.1, 5 / 6])
    # ranked toward class 0, the first row's top 2 are tokens 1 and 3
    # (between A at 0 and B at 2, and after B); the second row's are 0 (before A) and 3
    assert seq.intruders(tok, truth, np.array([-1.0, -1.0])).tolist() == [1, 1, 2]


@pytest.mark.slow  # the whole study at quick settings (~3 min on 2 busy cores)
def test_quick_study(seq, tmp_path):
    res = seq.main(["--quick", "--out", str(tmp_path)])
    _check_writes_results(res, tmp_path, seq)
    _check_models_learn(res)
    _check_shapley_deeplift_sums_to_delta(res, seq)
    _check_gate_as_weight_gap(res, tmp_path)
    _check_deeplift_finds_the_planted_tokens(res)


def _check_writes_results(res, out, seq):
    text = (out / "sequences.md").read_text()
    assert (out / "sequences.png").stat().st_size > 10_000
    for name, m in res["models"].items():
        for method, r in m["methods"].items():
            assert f"| {name} | {method} |" in text
            assert np.isfinite(r["seconds"]) and r["seconds"] > 0
    # the held-out set is of the positive class, with its two planted positions
    ids, truth = res["ids"], res["truth"]
    assert np.all(seq.order_rule(ids) == 1)
    assert np.all(ids[np.arange(len(ids)), truth[:, 0]] == seq.TOKEN_A)
    assert np.all(ids[np.arange(len(ids)), truth[:, 1]] == seq.TOKEN_B)


def _check_models_learn(res):
    # Stated bound: every model above 90% test accuracy at the quick settings (2000 training
    # sequences, 5 epochs). A model that ignored the order could reach at most 5/6 ≈ 83%
    # (class 1 needs both tokens and the order; "both, reversed" is a sixth of the data).
    for name, m in res["models"].items():
        assert m["test_acc"] > 0.9, (name, m["test_acc"])


def _check_shapley_deeplift_sums_to_delta(res, seq):
    # float32 rounding: the README's bound, 1e-5 · max(Σ|C|, |Δt|) + 64 eps κ (κ the rounding
    # scale of t's forward pass, computed by the study), on every pair; and, looser but
    # independent of κ, 3e-5 of max(Σ|C|, |Δt|) at these settings.
    for name, m in res["models"].items():
        for method, r in m["methods"].items():
            if r["gating"] != "shapley":
                continue
            assert np.all(np.isfinite(r["scores"]))
            assert np.abs(r["delta"]).min() > 1e-2  # the check has teeth
            err = seq.rounding_error(r["scores"], r["delta"])
            assert err.max() < 3e-5, (name, method, err.max())
            assert r["bound_ratio"] <= 1.0, (name, method, r["bound_ratio"])
            assert np.all(seq.bound_ratio(r["scores"], r["delta"], m["kappa"]) <= 1.0)
            # the token scores (jaxlift.token_scores) keep the sum
            np.testing.assert_allclose(r["tokens"].sum(1), r["scores"].sum((1, 2)),
                                       rtol=1e-5, atol=1e-5)


def _check_gate_as_weight_gap(res, out):
    if not res["gating"]:
        pytest.skip("this jaxlift has no gating= (gate-as-weight rows not computed)")
    text = (out / "sequences.md").read_text()
    for mode in ("rescale", "reveal_cancel"):
        r = res["models"]["LSTM"]["methods"][f"{mode} (gate-as-weight)"]
        assert f"| LSTM | {mode} (gate-as-weight) |" in text
        # the LSTM has biases, so the reference's signals tanh(g0) are not zero: each gate
        # product leaves s0·Δg out. A gap a thousand times float32 rounding:
        assert r["gap_max"] > 1e-3 and r["gap_median"] > 1e-4, (mode, r["gap_max"])
        shapley = res["models"]["LSTM"]["methods"][mode]
        assert r["gap_median"] > 100 * shapley["gap_max"]
        # the transformer has no logistic gate: the rule changes nothing there
        t = res["models"]["transformer"]["methods"]
        np.testing.assert_array_equal(t[f"{mode} (gate-as-weight)"]["scores"], t[mode]["scores"])


def _check_deeplift_finds_the_planted_tokens(res):
    # A random ranking finds the planted pair with probability res["chance"] (≈ 1/C(L, 2),
    # under 1%); every model's exact DeepLIFT modes must find it in more than half the
    # sequences (the tokens that decide the class are the two planted ones).
    assert res["chance"] < 0.02
    for name, m in res["models"].items():
        for mode in ("rescale", "reveal_cancel"):
            acc = m["methods"][mode]["top_signed"]
            assert acc > 0.5, (name, mode, acc)
