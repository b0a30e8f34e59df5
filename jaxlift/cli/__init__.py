"""The ``jaxlift`` command: DeepLIFT scores for Keras ``.h5``/``.keras`` models from the shell.

::

    jaxlift demo [--out DIR] [--mode M] [--n N]
    jaxlift attribute MODEL.h5 INPUTS... [--refs zeros|blur|FILE|near-uniform:DATA]
                      [--mode M] [--mode-option KEY=VALUE ...] [--target pred|IDX|all|A-B]
                      [--class-names A,B,...] [--layer NAME] [--resize]
                      [--batch-size auto|B] [--out FILE.npz|FOLDER] [--png DIR] [--quiet]
    jaxlift info MODEL.h5

MODEL.h5 may be any Keras model file: a legacy ``.h5`` (Keras 2 or 3) or a Keras 3
``.keras`` archive (told apart by content). Everything explains the model's **logits** (the
pre-activation of its final softmax/sigmoid). A model with a single (sigmoid) output has two
classes: class 1 is its logit ``z`` (P = σ(z)), class 0 the negated logit ``−z``
(P = 1 − σ(z)), so that either class can be explained.
Exit status: 0 on success; 2 for a usage error — argparse's, a file or folder named on the
command line that does not exist, or an option that does not fit the model (``--target`` out
of range, an unknown ``--layer``, a bad ``--mode-option``, …; :class:`UsageError`); 1 for
anything else (a file that cannot be read, data that do not fit the model, a folder that cannot
be written); each with a one-line ``jaxlift: error: ...`` on stderr (argparse adds its usage
line); 130 after Ctrl-C and 143 after SIGTERM.
Outputs appear whole or not at all: ``attribute`` computes everything, renders its PNGs into a
hidden temporary folder beside ``--png DIR``, then writes ``--out`` (a temporary file renamed
over it) and moves the PNGs into place right after. A new DIR appears with all its PNGs at once;
in an existing DIR each PNG of the run replaces the file of its name and other files stay. On
an error, Ctrl-C or SIGTERM nothing is changed and no temporary is left; after ``kill -9``,
the hidden ``.NAME.jaxlift-tmp-PID@HOST-*.tmp`` leftovers are removed by the next run.

The package, by job: :mod:`~jaxlift.cli.main` (the parser, exit statuses),
:mod:`~jaxlift.cli.commands` (demo, attribute, info), :mod:`~jaxlift.cli.options` (values typed
on the command line, checked against the model), :mod:`~jaxlift.cli.model` (the Keras file),
:mod:`~jaxlift.cli.inputs` (INPUTS and references), :mod:`~jaxlift.cli.explaining` (the scores),
:mod:`~jaxlift.cli.outputs` (the ``.npz``, the PNGs, the printed table) and
:mod:`~jaxlift.cli.store` (a data set streamed into a resumable folder). Importing it imports
neither JAX nor Matplotlib: each command imports what it needs.
"""
from __future__ import annotations

from jaxlift._lazy import renamed_attributes
from jaxlift.cli.options import (CLIError, UsageError, TargetSpec, parse_target,
                                 check_target_classes, parse_class_names, parse_feature_names,
                                 check_feature_names, check_class_names, LazyChoices,
                                 available_modes, sums_to_delta, check_mode_options,
                                 parse_option_value, parse_mode_option, default_window, patch_mask,
                                 resolve_mode_options, describe_options, parse_batch_size)
from jaxlift.cli.model import (TwoClass, LoadedModel, check_model_path, load_model, predict,
                               classes_of, probabilities)
from jaxlift.cli.inputs import (IMAGE_SUFFIXES, ARRAY_SUFFIXES, read_array_file, list_image_files,
                                image_geometry, image_changes, load_images, Batch, to_model_float,
                                fit_shape, check_finite, load_batch, make_refs, warn_changes)
from jaxlift.cli.explaining import (ALL_TARGETS_MAX, Result, explain, explain_per_class,
                                    summation_gap)
from jaxlift.cli.outputs import (class_label, class_words, logit_label, target_label,
                                 check_writable_file, check_writable_dir, write_npz_atomic,
                                 HeatmapPage, heatmap_pages, write_pngs, remove_stale_outputs,
                                 commit_outputs, format_table, score_arrays)
from jaxlift.cli.store import (is_store_path, attribute_to_store)
from jaxlift.cli.commands import (cmd_demo, cmd_attribute, cmd_info)
from jaxlift.cli.main import (build_parser, Terminated, sigterm_raises, main)

# the names the tests (and users of the command's pieces) knew before the split
_explain_per_class = explain_per_class
_format_table = format_table
# renamed public names (issue 27: one name, one thing); jaxlift.validation.check_target checks
# the API's target= argument
__getattr__ = renamed_attributes(__name__, globals(), {"check_target": "check_target_classes"})

__all__ = ["CLIError", "UsageError", "TargetSpec", "parse_target", "check_target_classes",
           "parse_class_names", "parse_feature_names", "check_feature_names", "check_class_names",
           "LazyChoices", "available_modes", "sums_to_delta", "check_mode_options",
           "parse_option_value", "parse_mode_option", "default_window", "patch_mask",
           "resolve_mode_options", "describe_options", "parse_batch_size", "TwoClass",
           "LoadedModel", "check_model_path", "load_model", "predict", "classes_of",
           "probabilities", "IMAGE_SUFFIXES", "ARRAY_SUFFIXES", "read_array_file",
           "list_image_files", "image_geometry", "image_changes", "load_images", "Batch",
           "to_model_float", "fit_shape", "check_finite", "load_batch", "make_refs", "warn_changes",
           "ALL_TARGETS_MAX", "Result", "explain", "explain_per_class", "summation_gap",
           "class_label", "class_words", "logit_label", "target_label", "check_writable_file",
           "check_writable_dir", "write_npz_atomic", "HeatmapPage", "heatmap_pages", "write_pngs",
           "remove_stale_outputs", "commit_outputs", "format_table", "score_arrays",
           "is_store_path", "attribute_to_store", "cmd_demo", "cmd_attribute", "cmd_info",
           "build_parser", "Terminated", "sigterm_raises", "main"]
