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
                "--batch-size", "1", "--out", "cd.npz", "--png", "png", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "jaxlift" not in r.stderr  # --quiet: no summary, no progress bar
    with np.load(tmp_path / "cd.npz") as z:
        assert z["scores"].shape == (1, 256, 256, 1)
        np.testing.assert_allclose(z["probabilities"][0, 0], 0.8673469, atol=1e-4)  # Keras's
        assert z["predictions"][0] == 1  # dog
        assert abs(z["scores"].sum() - z["delta"][0]) < 1e-3
        assert list(z["names"]) == ["test2.jpeg"]
    assert_valid_png(tmp_path / "png" / "test2.png")


def test_info_and_help(tmp_path):
    r = run_cli("info", MODEL, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("conv2d (Conv2D)", "dense_1 (Dense)", "Total params: 28,514"):
        assert name in r.stdout
    h = run_cli("--help", cwd=tmp_path)
    assert h.returncode == 0 and "usage: jaxlift" in h.stdout


@pytest.mark.parametrize("command", ["attribute", "demo", "info"])
def test_subcommand_help(command, capsys):
    code, out, err = call([command, "--help"], capsys)
    assert code == 0 and f"usage: jaxlift {command}" in out


def test_console_script_exists():
    script = Path(sys.executable).parent / "jaxlift"
    if not script.exists():
        pytest.skip("the jaxlift console script is not installed beside this Python")
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


@pytest.mark.parametrize("args, code, message", [
    (["attribute", "missing.h5", "x.npy"], 1, "no such Keras file: missing.h5"),
    (["attribute", str(MODEL), "x.npy", "--mode", "deconvnet"], 2, "invalid choice: 'deconvnet'"),
])
def test_errors_subprocess(tmp_path, args, code, message):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == code
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if code == 1:
        assert r.stderr.startswith("jaxlift: error: ") and r.stderr.count("\n") == 1


# ============================================================================ in-process


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
    ("batch size", ["{m}", "{f}/digits.npy", "--batch-size", "0"], "--batch-size 0"),
]


@pytest.mark.parametrize("name, argv, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, argv, message, files, tmp_path, capsys):
    argv = [a.format(m=MODEL, f=files, t=tmp_path) for a in argv]
    out_npz = tmp_path / "scores.npz"
    if "--out" not in argv:
        argv += ["--out", str(out_npz)]
    code, out, err = call(["attribute", *argv, "-q"], capsys)
    assert code == 1, (out, err)
    assert err.startswith("jaxlift: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not out_npz.exists() and not leftovers(tmp_path)
    assert not (files / "afile" ).is_dir()


@pytest.mark.parametrize("argv, message", [
    (["--mode", "deeplift"], "invalid choice: 'deeplift'"),
    (["--target", "3-3"], "two different classes"),
    (["--target", "-1"], "is not a target"),
    (["--target", "cat"], "'cat' is not a target"),
])
def test_usage_errors(argv, message, capsys):
    """Usage errors: exit status 2 with argparse's message."""
    code, out, err = call(["attribute", MODEL, "x.npy", *argv], capsys)
    assert code == 2 and message in err, err


def test_no_command_prints_usage(capsys):
    code, out, err = call([], capsys)
    assert code == 2 and "usage: jaxlift" in err


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
