"""The ``jaxlift`` command as a user meets it: demo, attribute, info, and every bad input.

Happy paths and a few errors run the real command in a subprocess (``python -m jaxlift.cli``);
the long list of bad inputs calls ``jaxlift.cli.main`` in-process (same code path, no 3 s
interpreter + JAX start per case), checking the exit status, the one-line message and that no
output file (or temporary file) is left behind.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from jaxlift import cli

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "jaxlift" / "data" / "mnist_small.h5"
DIGITS = REPO / "jaxlift" / "data" / "mnist_digits.npz"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m jaxlift.cli ARGS`` in ``cwd``; text output captured."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "jaxlift.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()


def leftovers(folder: Path) -> list[str]:
    """Temporary files our atomic writers would leave after a failure."""
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(DIGITS) as d:
        return d["x"], d["y"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits) -> Path:
    """A folder of good and bad inputs."""
    d = tmp_path_factory.mktemp("cli_inputs")
    x, _ = digits
    np.save(d / "digits.npy", x[:6])
    np.save(d / "digits_float.npy", x[:6].astype(np.float32) / 255)
    np.save(d / "bad_shape.npy", np.zeros((3, 27, 27), np.uint8))
    np.save(d / "int64.npy", np.zeros((3, 28, 28), np.int64))
    np.save(d / "refs_float.npy", np.zeros((1, 28, 28), np.float32))
    np.save(d / "refs_shape.npy", np.zeros((2, 27, 27), np.uint8))
    np.save(d / "refs_per_input.npy", np.zeros((6, 2, 28, 28, 1), np.float32))
    nan = x[:3].astype(np.float32) / 255
    nan[1, 5, 5] = np.nan
    np.save(d / "nan.npy", nan)
    inf = np.zeros((1, 28, 28), np.float32)
    inf[0, 0, 0] = np.inf
    np.save(d / "inf_refs.npy", inf)
    np.save(d / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    np.savez(d / "two.npz", a=x[:2], b=x[:2])
    (d / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    (d / "trunc.npy").write_bytes((d / "digits.npy").read_bytes()[:1500])
    (d / "emptydir").mkdir()
    (d / "badimg").mkdir()
    (d / "badimg" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    Image.fromarray(x[0]).save(d / "seven.png")
    raw = MODEL.read_bytes()
    (d / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    (d / "text.h5").write_text("not a model\n")
    with h5py.File(d / "nomodel.h5", "w") as f:
        f["x"] = np.zeros(3)
    shutil.copy(MODEL, d / "nanparams.h5")
    with h5py.File(d / "nanparams.h5", "r+") as f:
        kernels = []
        f.visititems(lambda n, o: kernels.append(n) if isinstance(o, h5py.Dataset)
                     and n.endswith("kernel") else None)
        k = f[kernels[-1]]
        a = k[()]
        a[0, 0] = np.nan
        k[...] = a
    (d / "afile").write_text("a file, not a folder\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 400, 3), dtype=np.uint8)).save(d / "wide.png")
    Image.fromarray(x[1]).resize((56, 56)).convert("RGB").save(d / "big_gray_rgb.png")
    return d


# ============================================================================ subprocess


@pytest.mark.slow  # a subprocess or a 256×256 model end to end
def test_demo(tmp_path):
    r = run_cli("demo", "--out", "demo_out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = re.search(r"max \|Σ contributions − Δlogit\| = ([0-9.e+-]+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) < 1e-3
    png = tmp_path / "demo_out" / "demo_reveal_cancel.png"
    assert str(png.resolve()) in r.stdout
    assert_valid_png(png)
    # five digits: their labels and predictions are printed
    assert len(re.findall(r"^\s+\d\s+\d\s+\d\s+[01]\.\d{3}", r.stdout, re.M)) == 5


@pytest.mark.slow  # a subprocess or a 256×256 model end to end
def test_attribute_npy_subprocess(tmp_path, files, digits):
    r = run_cli("attribute", MODEL, files / "digits.npy", "--out", "s.npz", "--png", "png",
                "--batch-size", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "summation-to-delta" in r.stdout
    with np.load(tmp_path / "s.npz") as z:
        assert z["scores"].shape == (6, 28, 28, 1)
        assert z["delta"].shape == (6,)
        np.testing.assert_array_equal(z["predictions"], digits[1][:6])
        np.testing.assert_array_equal(z["targets"], z["predictions"])
        gap = np.abs(z["scores"].reshape(6, -1).sum(1) - z["delta"])
        assert gap.max() < 1e-3 * max(1.0, np.abs(z["delta"]).max())
        assert str(z["mode"]) == "reveal_cancel"
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 6
    assert_valid_png(pngs[0])
    assert not leftovers(tmp_path)


@pytest.mark.slow  # a subprocess or a 256×256 model end to end
def test_attribute_cats_and_dogs(tmp_path, shared_data):
    cd = shared_data / "catsordogs"
    r = run_cli("attribute", cd / "model.h5", cd / "test2.jpeg", "--refs", "blur",
                "--batch-size", "1", "--out", "cd.npz", "--png", "png", "--quiet", "--resize",
                "--class-names", "cat,dog", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # --quiet: no summary, no progress bar; the --resize warning stays:
    assert r.stderr.strip() == ("jaxlift: warning: test2.jpeg: stretched from 287×217 to "
                                "256×256 (aspect ratio 1.32 → 1.00), colour converted to "
                                "grayscale")
    with np.load(tmp_path / "cd.npz") as z:
        assert z["scores"].shape == (1, 256, 256, 1)
        # the classes of a sigmoid model: [P(cat), P(dog)] = [1 − σ(z), σ(z)], Keras's σ(z)
        np.testing.assert_allclose(z["probabilities"][0], [0.1326531, 0.8673469], atol=1e-4)
        assert z["predictions"][0] == 1 and list(z["class_names"]) == ["cat", "dog"]
        assert abs(z["scores"].sum() - z["delta"][0]) < 1e-3
        assert list(z["names"]) == ["test2.jpeg"]
    assert_valid_png(tmp_path / "png" / "test2.png")


def test_info_and_help(tmp_path):
    r = run_cli("info", MODEL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("conv2d (Conv2D)", "dense_1 (Dense)", "Total params: 28,514", "Activation",
                 "Output activation: softmax (dense_1)"):
        assert name in r.stdout
    assert re.search(r"conv2d \(Conv2D\) +\(None, 13, 13, 8\) +relu +136", r.stdout)
    h = run_cli("--help", cwd=tmp_path)
    assert h.returncode == 0 and "usage: jaxlift" in h.stdout


@pytest.mark.parametrize("command", ["attribute", "demo", "info"])
def test_subcommand_help(command, capsys):
    code, out, err = call([command, "--help"], capsys)
    assert code == 0 and f"usage: jaxlift {command}" in out
    if command != "info":  # every method of jaxlift.attribute is offered
        flat = " ".join(out.split())
        for mode in ("rescale", "reveal_cancel", "genomics_default", "gradient",
                     "integrated_gradients", "occlusion", "shapley_sampling", "lrp_epsilon",
                     "lime", "kernel_shap", "smoothgrad"):
            assert mode in flat


def test_cli_import_is_light(tmp_path):
    """``import jaxlift`` and ``import jaxlift.cli`` (the ``jaxlift`` command before it knows
    what to do) import neither JAX nor Flax, h5py or Matplotlib; attribute access does."""
    code = ("import sys, jaxlift, jaxlift.cli; heavy = {'jax', 'flax', 'h5py', 'matplotlib', "
            "'tqdm', 'torch', 'optax'}; print(sorted(heavy & {m.split('.')[0] for m in "
            "sys.modules})); jaxlift.references.zeros_like; print('jax' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "True"]


def test_console_script_exists():
    script = Path(sys.executable).parent / "jaxlift"
    if not script.exists():
        pytest.skip("the jaxlift console script is not installed beside this Python")
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


@pytest.mark.parametrize("args, code, message, one_line", [
    (["attribute", "missing.h5", "x.npy"], 2, "no such Keras file: missing.h5", True),
    (["info", "missing.h5"], 2, "no such Keras file: missing.h5", True),
    (["attribute", str(MODEL), "x.npy", "--mode", "deconvnet"], 2, "invalid choice: 'deconvnet'",
     False),  # argparse's: a usage line, then the error
])
def test_errors_subprocess(tmp_path, args, code, message, one_line):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == code
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if one_line:
        assert r.stderr.startswith("jaxlift: error: ") and r.stderr.count("\n") == 1


# ============================================================================ in-process


@pytest.fixture(scope="module")
def sigmoid_model(tmp_path_factory) -> Path:
    """A tiny Keras model with one sigmoid output (a 'P(dog)' model), written by jaxlift."""
    import jax
    from jaxlift.io.keras_h5 import save_keras_h5
    from jaxlift.models.generic import KerasModel, sequential_graph

    graph = sequential_graph("tiny_binary", (None, 6, 6, 1), [
        ("Flatten", "flatten", {"data_format": "channels_last"}),
        ("Dense", "hidden", {"units": 4, "activation": "relu", "use_bias": True}),
        ("Dense", "out", {"units": 1, "activation": "sigmoid", "use_bias": True})])
    model = KerasModel(graph)
    variables = model.init(jax.random.PRNGKey(2), np.zeros((1, 6, 6, 1), np.float32))
    x = np.random.default_rng(1).normal(size=(5, 6, 6, 1)).astype(np.float32)
    z = np.asarray(model.apply(variables, x, logits=True))[:, 0]
    out = variables["params"]["out"]
    # a bias between the logits: both classes are predicted, and P(zero reference) ≠ 0.5
    out["bias"] = out["bias"] - 0.5 * (np.sort(z)[1] + np.sort(z)[2])
    path = tmp_path_factory.mktemp("binary") / "binary.h5"
    save_keras_h5(path, model, variables)
    np.save(path.parent / "x.npy", x)
    return path


def call(argv: list, capsys) -> tuple[int, str, str]:
    """``main(argv)`` → (exit status, stdout, stderr); argparse's exits become statuses."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_attribute_variants(tmp_path, files, capsys):
    """Class difference + blur + Rescale; every output + a layer + near-uniform references;
    references per input from a file; an image file. Summation holds in each."""
    runs = {
        "diff": ["--target", "3-5", "--refs", "blur", "--mode", "rescale"],
        "layer": ["--target", "all", "--layer", "dense", "--refs",
                  f"near-uniform:{DIGITS}", "--num-refs", "3"],
        "perinput": ["--refs", files / "refs_per_input.npy", "--target", "7"],
    }
    for name, extra in runs.items():
        inputs = files / ("digits_float.npy" if name != "diff" else "digits.npy")
        code, out, err = call(["attribute", MODEL, inputs, "--out", tmp_path / f"{name}.npz",
                               "-q", *extra], capsys)
        assert code == 0, err
        with np.load(tmp_path / f"{name}.npz") as z:
            s, d = z["scores"], z["delta"]
            total = s.reshape(*d.shape, -1).sum(-1)
            np.testing.assert_allclose(total, d, atol=1e-3, rtol=1e-4)
            if name == "layer":
                assert s.shape == (6, 10, 64) and "near-uniform" in str(z["reference"])
            if name == "diff":
                assert str(z["target"]) == "3-5" and (z["targets"] == -1).all()
            # the base value t(r), averaged over each input's references as Δ is: a user
            # rebuilds the explained value t(x) = base_value + Σ scores
            logits = z["logits"].astype(np.float64)
            t_x = {"diff": logits[:, 3] - logits[:, 5], "layer": logits,
                   "perinput": logits[:, 7]}[name]
            assert z["base_value"].shape == d.shape
            np.testing.assert_allclose(z["base_value"] + d, t_x, atol=1e-4, rtol=1e-5)
            np.testing.assert_allclose(z["base_value"] + total, t_x, atol=2e-3, rtol=1e-4)
            if name == "perinput":  # all-zero references: t of the black image, for every input
                loaded = cli.load_model(MODEL)
                black = cli.predict(loaded, np.zeros((1, 28, 28, 1), np.float32))[0, 7]
                np.testing.assert_allclose(z["base_value"], black, atol=1e-5)
            if name == "diff":  # blurred copies: each input its own reference and base
                assert len(np.unique(z["base_value"])) == 6
    code, out, err = call(["attribute", MODEL, files / "seven.png", "--png", tmp_path / "p"],
                          capsys)
    assert code == 0, err
    assert "seven.png" in out
    assert_valid_png(tmp_path / "p" / "seven.png")


BAD = [
    # (name, argv after "attribute" with {f} = the files folder, message fragment)
    ("input shape", ["{m}", "{f}/bad_shape.npy"], "has shape (3, 27, 27), which does not fit"),
    ("refs shape", ["{m}", "{f}/digits.npy", "--refs", "{f}/refs_shape.npy"],
     "which does not fit inputs of shape (6, 28, 28, 1)"),
    ("input dtype", ["{m}", "{f}/int64.npy"], "has dtype int64; expected floats"),
    ("refs dtype", ["{m}", "{f}/digits.npy", "--refs", "{f}/refs_float.npy"],
     "have dtype float32 but the inputs have dtype uint8"),
    ("nan input", ["{m}", "{f}/nan.npy"], "nan.npy holds 1 NaN or Inf"),
    ("inf refs", ["{m}", "{f}/digits_float.npy", "--refs", "{f}/inf_refs.npy"],
     "inf_refs.npy holds 1 NaN or Inf"),
    ("nan params", ["{f}/nanparams.h5", "{f}/digits.npy"], "holds 1 NaN or Inf value(s); the model"),
    ("empty npy", ["{m}", "{f}/empty.npy"], "empty.npy: no inputs found (an empty batch)"),
    ("empty folder", ["{m}", "{f}/emptydir"], "emptydir: no inputs found (an empty batch)"),
    ("target range", ["{m}", "{f}/digits.npy", "--target", "10"],
     "output 10 is out of range; the model has 10 output(s), numbered 0 to 9"),
    ("diff range", ["{m}", "{f}/digits.npy", "--target", "2-12"], "output 12 is out of range"),
    ("missing model", ["{f}/none.h5", "{f}/digits.npy"], "no such Keras file"),
    ("truncated h5", ["{f}/trunc.h5", "{f}/digits.npy"], "truncated"),
    ("text h5", ["{f}/text.h5", "{f}/digits.npy"], "not a readable HDF5 file"),
    ("non-Keras h5", ["{f}/nomodel.h5", "{f}/digits.npy"], "no 'model_config' attribute"),
    ("garbage npy", ["{m}", "{f}/garbage.npy"], "cannot read it as a NumPy .npy/.npz file"),
    ("truncated npy", ["{m}", "{f}/trunc.npy"], "cannot read it as a NumPy .npy/.npz file"),
    ("ambiguous npz", ["{m}", "{f}/two.npz"], "holds arrays ['a', 'b']"),
    ("missing input", ["{m}", "{f}/none.npy"], "none.npy: no such file or folder"),
    ("bad image", ["{m}", "{f}/badimg"], "broken.png: cannot decode the image"),
    ("unknown layer", ["{m}", "{f}/digits.npy", "--layer", "dense_7"],
     "no such layer; its layers are conv2d, conv2d_1"),
    ("unknown refs", ["{m}", "{f}/digits.npy", "--refs", "mean"], "--refs 'mean': no such file"),
    ("out folder missing", ["{m}", "{f}/digits.npy", "--out", "{t}/nodir/s.npz"],
     "nodir does not exist"),
    ("out under a file", ["{m}", "{f}/digits.npy", "--out", "{f}/afile/s.npz"],
     "afile is a file, not a folder"),
    ("out is a folder", ["{m}", "{f}/digits.npy", "--out", "{t}"], "is a folder"),
    ("png under a file", ["{m}", "{f}/digits.npy", "--png", "{f}/afile/png"],
     "afile is a file, not a folder"),
    ("wide colour image", ["{m}", "{f}/wide.png"],
     "stretched from 400×30 to 28×28 (aspect ratio 13.33 → 1.00) and colour converted to "
     "grayscale"),
    ("unknown mode option", ["{m}", "{f}/digits.npy", "--mode", "occlusion", "--mode-option",
                             "windw=3"], "unknown mode_options ['windw'] for mode 'occlusion'"),
    ("bad mode option", ["{m}", "{f}/digits.npy", "--mode", "integrated_gradients",
                         "--mode-option", "steps=0"], "steps must be a positive int, got 0"),
    ("option of a DeepLIFT mode", ["{m}", "{f}/digits.npy", "--mode-option", "steps=3"],
     "mode 'reveal_cancel' takes no mode_options (got ['steps'])"),
    ("class names count", ["{m}", "{f}/digits.npy", "--class-names", "a,b"],
     "--class-names gives 2 name(s) but the model has 10 classes"),
]


# The command line asks for what cannot be (exit status 2, as the README says): a file named on
# it that does not exist, or an option that does not fit the model. The others (exit status 1)
# are files that cannot be read, data that do not fit, places that cannot be written.
USAGE = {"target range", "diff range", "missing model", "missing input", "unknown layer",
         "unknown refs", "unknown mode option", "bad mode option", "option of a DeepLIFT mode",
         "class names count"}


@pytest.mark.parametrize("name, argv, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, argv, message, files, tmp_path, capsys):
    argv = [a.format(m=MODEL, f=files, t=tmp_path) for a in argv]
    out_npz = tmp_path / "scores.npz"
    if "--out" not in argv:
        argv += ["--out", str(out_npz)]
    code, out, err = call(["attribute", *argv, "-q"], capsys)
    assert code == (2 if name in USAGE else 1), (out, err)
    assert err.startswith("jaxlift: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out_npz.exists() and not leftovers(tmp_path)
    assert not (files / "afile" ).is_dir()


@pytest.mark.parametrize("argv, message", [
    (["--mode", "deeplift"], "invalid choice: 'deeplift'"),
    (["--target", "3-3"], "two different classes"),
    (["--target", "-1"], "is not a target"),
    (["--target", "cat"], "'cat' is not a target"),
    (["--batch-size", "0"], "argument --batch-size: 0: give auto or a positive number"),
    (["--batch-size", "many"], "'many': give auto or a positive number"),
    (["--mode-option", "window"], "give an option as KEY=VALUE"),
    (["--class-names", "cat,,dog"], "an empty name is not allowed"),
])
def test_usage_errors(argv, message, capsys):
    """Usage errors: exit status 2 with argparse's message."""
    code, out, err = call(["attribute", MODEL, "x.npy", *argv], capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("argv, message", [
    (["--out", "{t}/store", "--png", "{t}/png"], "--png is not available with a folder --out"),
    (["--out", "{t}/store", "--refs", "blur", "--target", "3"], "with a folder --out, give zeros"),
    (["--num-refs", "0"], "--num-refs 0: give a positive number"),
    (["--refs", "near-uniform:"], "needs a data file or folder after the colon"),
    (["--mode-option", "steps=3", "--mode-option", "steps=4", "--mode", "integrated_gradients"],
     "steps= is given twice"),
])
def test_options_that_cannot_be_exit_2(argv, message, files, tmp_path, capsys):
    """An option that does not fit the model or the other options is a usage error: exit
    status 2 and one line on stderr, before anything is computed or written."""
    argv = [a.format(t=tmp_path) for a in argv]
    code, out, err = call(["attribute", MODEL, files / "digits.npy", "-q", *argv], capsys)
    assert code == 2, (out, err)
    assert err.startswith("jaxlift: error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_out_help_names_the_file_and_the_folder(capsys):
    code, out, err = call(["attribute", "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split())
    assert "--out FILE.npz|FOLDER" in flat
    assert "base_value" in flat and "resumable folder" in flat and "open_scores" in flat


def test_no_command_prints_usage(capsys):
    code, out, err = call([], capsys)
    assert code == 2 and "usage: jaxlift" in err


def test_demo_in_process(tmp_path, capsys, digits):
    """A successful ``jaxlift demo`` in the default run (the same ``main`` as the command; the
    subprocess run of all five digits is in the slow step): two digits, the shipped model,
    RevealCancel, the summation check printed and a PNG written."""
    code, out, err = call(["demo", "--out", tmp_path / "demo", "--n", "2"], capsys)
    assert code == 0, err
    gap = re.search(r"max \|Σ contributions − Δlogit\| = ([0-9.e+-]+)", out)
    assert gap and float(gap.group(1)) < 1e-3, out
    rows = re.findall(r"^\s+(\d)\s+(\d)\s+(\d)\s+[01]\.\d{3}\s+(-?[0-9.]+)\s+(-?[0-9.]+)$",
                      out, re.M)
    assert [int(row[1]) for row in rows] == list(digits[1][:2]), out
    for *_, delta, total in rows:  # each digit's scores add up to its Δlogit (as printed)
        assert abs(float(delta) - float(total)) <= 2e-3 and abs(float(delta)) > 0.1
    assert_valid_png(tmp_path / "demo" / "demo_reveal_cancel.png")


def test_demo_bad_out(files, capsys):
    code, out, err = call(["demo", "--out", files / "afile" / "demo"], capsys)
    assert code == 1 and "afile is a file, not a folder" in err


def test_info_bad_file(files, capsys):
    code, out, err = call(["info", files / "trunc.h5"], capsys)
    assert code == 1 and err.startswith("jaxlift: error: ") and "trunc.h5" in err


def test_parse_target_and_helpers():
    assert cli.parse_target("pred") == cli.TargetSpec("pred")
    assert cli.parse_target("4") == cli.TargetSpec("index", 4)
    assert cli.parse_target("all") == cli.TargetSpec("all")
    assert cli.parse_target("3-5") == cli.TargetSpec("diff", 3, 5)
    assert cli.fit_shape(np.zeros((2, 28, 28)), (28, 28, 1), "x").shape == (2, 28, 28, 1)
    assert cli.fit_shape(np.zeros((28, 28, 1)), (28, 28, 1), "x").shape == (1, 28, 28, 1)
    assert cli.classes_of(np.array([[-1.0], [2.0]])).tolist() == [0, 1]


def test_explain_per_class_grouped_path_matches_all():
    """Many-output models run once per predicted class; the result equals the 'all' path."""
    calls = []

    def run(x, refs, target):
        calls.append(target)
        w = np.arange(1, 4, dtype=np.float32)
        base = x[..., None] * w  # (N, F, T)
        s = np.moveaxis(base, -1, 1)  # (N, T, F)
        d = s.sum(-1)
        return (s, d) if target == "all" else (s[:, target], d[:, target])

    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    cls = np.array([2, 0, 2, 1])
    a = cli._explain_per_class(run, x, np.zeros((1, 2), np.float32), cls, 3, all_max=16)
    b = cli._explain_per_class(run, x, np.zeros((1, 2), np.float32), cls, 3, all_max=0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert calls == ["all", 0, 1, 2]


def test_single_logit_model_has_two_classes(sigmoid_model, tmp_path, capsys):
    """One sigmoid output: class 1 is the logit z, class 0 is −z; --target 0 answers "why
    cat?", the table prints the predicted class's name and its own probability."""
    x = sigmoid_model.parent / "x.npy"
    code, out, err = call(["info", sigmoid_model], capsys)
    assert code == 0 and "Output activation: sigmoid (out)" in out
    runs = {}
    for target in ("pred", "0", "1"):
        npz = tmp_path / f"{target}.npz"
        code, out, err = call(["attribute", sigmoid_model, x, "--target", target,
                               "--class-names", "cat,dog", "--out", npz], capsys)
        assert code == 0, err
        runs[target] = (out, dict(np.load(npz)))
    z = runs["1"][1]["logits"][:, 0]
    p_dog = 1 / (1 + np.exp(-z.astype(np.float64)))
    pred = (z > 0).astype(int)
    assert 0 < pred.sum() < len(pred)  # both classes occur
    for _target, (out, a) in runs.items():
        np.testing.assert_allclose(a["probabilities"], np.stack([1 - p_dog, p_dog], 1),
                                   rtol=1e-5)
        assert (a["predictions"] == pred).all() and list(a["class_names"]) == ["cat", "dog"]
        s = a["scores"].reshape(*a["delta"].shape, -1).sum(-1)
        np.testing.assert_allclose(s, a["delta"], atol=1e-5)
        rows = [line.split() for line in out.splitlines() if re.match(r"^\d ", line)]
        assert [r[1] for r in rows] == [["cat", "dog"][c] for c in pred]
        np.testing.assert_allclose([float(r[2]) for r in rows],
                                   np.where(pred == 1, p_dog, 1 - p_dog), atol=6e-4)
    # cat evidence is the negated dog evidence (to float32 rounding)
    np.testing.assert_allclose(runs["0"][1]["scores"], -runs["1"][1]["scores"], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(runs["0"][1]["delta"], -runs["1"][1]["delta"], rtol=1e-6)
    by_class = np.stack([runs["0"][1]["scores"], runs["1"][1]["scores"]], 1)
    np.testing.assert_allclose(runs["pred"][1]["scores"], by_class[np.arange(5), pred],
                               rtol=1e-5, atol=1e-7)
    assert [r.split()[3] for r in runs["0"][0].splitlines() if re.match(r"^\d ", r)] == ["cat"] * 5
    code, out, err = call(["attribute", sigmoid_model, x, "--target", "2"], capsys)
    assert code == 2 and "two classes: 0 (the negated logit" in err


def test_every_method_from_the_cli(sigmoid_model, tmp_path, capsys):
    """Baseline modes run from the CLI; occlusion's default window on a 6×6 image is one pixel,
    so its score is t(x) − t(x with that pixel set to the reference), computed here by hand."""
    import jax
    from jaxlift.io.keras_files import load_keras

    x = np.load(sigmoid_model.parent / "x.npy")
    code, out, err = call(["attribute", sigmoid_model, sigmoid_model.parent / "x.npy", "--mode",
                           "occlusion", "--target", "1", "--batch-size", "auto",
                           "--out", tmp_path / "occ.npz"], capsys)
    assert code == 0, err
    assert "window=(1, 1, 1), stride=(1, 1, 1)" in out and "does not promise" in out
    model, variables = load_keras(sigmoid_model)
    f = jax.jit(lambda xb: model.apply(variables, xb, logits=True)[:, 0])
    occluded = np.repeat(x[:1], 36, 0).reshape(36, -1)
    occluded[np.arange(36), np.arange(36)] = 0.0
    want = np.asarray(f(x[:1]))[0] - np.asarray(f(occluded.reshape(36, 6, 6, 1)))
    with np.load(tmp_path / "occ.npz") as z:
        np.testing.assert_allclose(z["scores"][0].ravel(), want, rtol=1e-4, atol=1e-6)
        assert str(z["mode"]) == "occlusion"
    code, out, err = call(["attribute", sigmoid_model, sigmoid_model.parent / "x.npy", "--mode",
                           "integrated_gradients", "--mode-option", "steps=64",
                           "--mode-option", "method=riemann_middle", "--target", "1", "-q",
                           "--out", tmp_path / "ig.npz"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "ig.npz") as z:  # IG sums to Δ as steps grow (piecewise linear f)
        np.testing.assert_allclose(z["scores"].reshape(5, -1).sum(1), z["delta"], atol=0.05)


def test_resize_warns_and_plain_resizes_are_noted(files, tmp_path, capsys):
    code, out, err = call(["attribute", MODEL, files / "wide.png", files / "big_gray_rgb.png",
                           "--resize", "-q", "--mode", "gradient", "--out", tmp_path / "s.npz"],
                          capsys)
    assert code == 0, err
    assert ("jaxlift: warning: wide.png: stretched from 400×30 to 28×28 (aspect ratio 13.33 → "
            "1.00), colour converted to grayscale") in err
    assert "big_gray_rgb.png: resized from 56×56 to 28×28" in err
    # a grayscale picture stored as RGB, same aspect ratio: fitted without --resize
    code, out, err = call(["attribute", MODEL, files / "big_gray_rgb.png", "-q", "--mode",
                           "gradient"], capsys)
    assert code == 0, err
    assert "note: big_gray_rgb.png: resized from 56×56 to 28×28" in err


def test_mode_option_values_and_defaults():
    assert cli.parse_mode_option("window=4,4,1") == ("window", (4, 4, 1))
    assert cli.parse_mode_option("steps = 32") == ("steps", 32)
    assert cli.parse_mode_option("method=riemann_left") == ("method", "riemann_left")
    assert cli.parse_mode_option("stride=[2, 2, 1]") == ("stride", (2, 2, 1))
    assert cli.parse_mode_option("perturbations_per_eval=none") == ("perturbations_per_eval",
                                                                    None)
    assert cli.default_window((28, 28, 1)) == ((4, 4, 1), (2, 2, 1))
    assert cli.default_window((256, 200, 3)) == ((32, 25, 3), (16, 13, 3))
    assert cli.default_window((10, 4)) == ((1, 4), (1, 4))
    assert cli.default_window((7,)) == ((1,), (1,))
    mask = cli.patch_mask((6, 6, 2), (4, 4, 2))
    assert mask.shape == (6, 6, 2) and sorted(np.unique(mask)) == [0, 1, 2, 3]
    assert (mask[:4, :4] == 0).all() and (mask[4:, 4:] == 3).all()
    opts = cli.resolve_mode_options("shapley_sampling", [("num_permutations", 2)], (8, 8, 1))
    assert opts["num_permutations"] == 2 and opts["feature_mask"].shape == (8, 8, 1)
    for mode in ("lime", "kernel_shap"):  # patches by default, not one group per pixel
        mask = cli.resolve_mode_options(mode, [], (28, 28, 1))["feature_mask"]
        assert mask.shape == (28, 28, 1) and len(np.unique(mask)) == 49  # 4×4 patches
    with pytest.raises(cli.CLIError, match="given twice"):
        cli.resolve_mode_options("occlusion", [("window", 2), ("window", 3)], (8, 8, 1))


def _page_inputs(logits, targets, names=None, shape=(4, 4, 1)):
    """A Batch and a Result as ``attribute`` makes them, without a model."""
    n = len(logits)
    x = np.random.default_rng(0).uniform(size=(n, *shape)).astype(np.float32)
    batch = cli.Batch(x, [f"in{i}.png" for i in range(n)], "image", "files")
    scores = np.random.default_rng(1).normal(size=(n, *shape)).astype(np.float32)
    return batch, cli.Result(scores, scores.reshape(n, -1).sum(1), np.asarray(targets),
                             np.asarray(logits, np.float32), names)


def test_single_logit_figures_name_the_classes():
    # logit −0.9: cat with P(cat) = σ(0.9) = 0.711; logit 1.9: dog with σ(1.9) = 0.870
    batch, res = _page_inputs([[-0.9], [1.9]], [0, 1], ("cat", "dog"))
    cat, dog = cli.heatmap_pages(batch, res, cli.parse_target("pred"))
    assert cat.target == "the cat logit (−z)" and dog.target == "the dog logit (z)"
    assert list(cat.panels) == ["cat logit (−z)"]
    assert "predicted: cat (p = 0.711)" in cat.subtitle
    assert "predicted: dog (p = 0.870)" in dog.subtitle and "class" not in dog.subtitle
    s = np.stack([-res.scores, res.scores], axis=1)  # --target all: both classes
    every = cli.Result(s, np.stack([-res.delta, res.delta], 1), np.full(2, -1), res.logits,
                       ("cat", "dog"))
    page = cli.heatmap_pages(batch, every, cli.parse_target("all"))[0]
    assert list(page.panels) == ["cat logit (−z)", "dog logit (z)"]
    np.testing.assert_array_equal(page.panels["cat logit (−z)"], -res.scores[0])
    diff = cli.heatmap_pages(batch, res, cli.parse_target("1-0"))[1]
    assert diff.target == "the dog logit (z) − cat logit (−z)"
    # without names: "class k"; the table names the difference's classes too
    batch, res = _page_inputs([[0.4]], [1])
    page, = cli.heatmap_pages(batch, res, cli.parse_target("1"))
    assert page.target == "the class 1 logit (z)" and "predicted: class 1 (p = 0.599)" in \
        page.subtitle
    batch, res = _page_inputs([[-0.9], [1.9]], [-1, -1], ("cat", "dog"))
    table = cli._format_table(batch.names, res, np.zeros(2), spec=cli.parse_target("1-0"))
    assert re.search(r"in1\.png +dog +0\.870 +dog−cat", table), table


def test_multi_class_figures_name_the_classes():
    batch, res = _page_inputs([[0.0, 2.0, 0.0]], [1], ("ant", "bee", "cow"))
    page, = cli.heatmap_pages(batch, res, cli.parse_target("pred"))
    assert page.target == "the bee logit" and "predicted: bee (p = 0.787)" in page.subtitle
    batch, res = _page_inputs([[0.0, 2.0, 0.0]], [2])
    page, = cli.heatmap_pages(batch, res, cli.parse_target("2"))
    assert page.target == "the class 2 logit" and "predicted: class 1" in page.subtitle


@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory) -> Path:
    """A tiny Keras model on 3 tabular features (softmax over 2 classes), written by jaxlift."""
    import jax
    from jaxlift.io.keras_h5 import save_keras_h5
    from jaxlift.models.generic import KerasModel, sequential_graph

    graph = sequential_graph("tiny_tabular", (None, 3), [
        ("Dense", "out", {"units": 2, "activation": "softmax", "use_bias": True})])
    model = KerasModel(graph)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32))
    path = tmp_path_factory.mktemp("tabular") / "tabular.h5"
    save_keras_h5(path, model, variables)
    np.save(path.parent / "x.npy", np.array([[1.0, -2.0, 0.5]], np.float32))
    return path


def test_feature_names_label_the_bars(tabular_model, tmp_path, capsys):
    x = tabular_model.parent / "x.npy"
    names = tmp_path / "names.txt"
    names.write_text("age\nincome\n\nheight\n")
    for given in ("age,income,height", names):
        code, out, err = call(["attribute", tabular_model, x, "--png", tmp_path / "p", "-q",
                               "--feature-names", given, "--mode", "gradient"], capsys)
        assert code == 0, err
        assert_valid_png(tmp_path / "p" / "input_0000.png")
    assert cli.parse_feature_names(str(names)) == ("age", "income", "height")
    (tmp_path / "header.csv").write_text("a, b ,c\n")
    assert cli.parse_feature_names(str(tmp_path / "header.csv")) == ("a", "b", "c")
    # the pages carry the names; a wrong count, an image model or --layer is refused
    batch, res = _page_inputs([[0.0, 1.0]], [1], shape=(3,))
    page, = cli.heatmap_pages(cli.Batch(batch.x, ["r"], "float32", "x.npy"), res,
                              cli.parse_target("pred"), feature_names=("age", "income", "h"))
    assert page.kind == "features" and page.names == ("age", "income", "h")
    for argv, message in (  # usage errors: argparse's, and names that do not fit the model
            (["--feature-names", "a,,c"], "a feature name is empty"),
            (["--feature-names", "a,b,a"], "repeat a name"),
            (["--feature-names", "a,b"], "--feature-names gives 2 name(s) but the model's "
                                         "input has 3 features"),
            (["--feature-names", "a,b,c", "--layer", "out"], "with --layer the bars are "
                                                              "the layer's units")):
        code, out, err = call(["attribute", tabular_model, x, "-q", *argv], capsys)
        assert code == 2 and message in err, err
    code, out, err = call(["attribute", MODEL, x, "-q", "--feature-names", "a,b,c"], capsys)
    assert code == 2 and "labels tabular inputs" in err and "(28, 28, 1)" in err, err
