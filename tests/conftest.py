"""Shared test set-up: Keras runs on the JAX backend; shared data lives beside the repo."""
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
# Tests compile many small programs: skip LLVM's expensive passes (halves compile time).
# (--xla_backend_optimization_level=0 would be faster still but miscompiles some vmapped
# programs on CPU in jaxlib 0.10.2: it produced inf multipliers where eager mode gave finite ones.)
os.environ.setdefault("XLA_FLAGS", "--xla_llvm_disable_expensive_passes=true")

import jax
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Cases that run in the slow step only, so that the default run keeps to its budget. Each is a
# second parametrization or a second route of something the default run checks, named beside
# it. Whole end-to-end tests carry @pytest.mark.slow in their own files instead.
SLOW_CASES = {
    "test_hand_rescale.py::test_the_hand_written_rescale_gives_jaxlifts_scores":
        "a benchmark's floor, not the library: jaxlift's Rescale on ReLU CNNs is checked by "
        "default against the oracles (test_oracle_rules, test_core_exact); CI's slow step checks "
        "that the floor computes the same scores",
    "test_stored_programs.py::test_a_kernel_methods_program_is_kept_too[smoothgrad]":
        "[integrated_gradients] runs by default (the same kernel-family program store)",
    "test_stored_programs.py::test_a_model_built_again_runs_the_program_compiled_for_it"
    "[reveal_cancel]": "[rescale] runs by default (the same key and shelf for every mode)",
    "test_targets_as_data.py::test_pred_as_data_in_half_precision_scores_each_inputs_argmax"
    "[float16]": "[bfloat16] runs by default (the same float32 rows, resolved the same way)",
    "test_hand_rescale.py::test_the_hand_written_reveal_cancel_gives_jaxlifts_scores":
        "a benchmark's floor, not the library: jaxlift's RevealCancel on ReLU CNNs is checked "
        "by default against the oracles (test_oracle_rules, test_reveal_cancel); CI's slow step "
        "checks that the floor computes the same scores",
    "test_certificate.py::test_float64_is_not_offered_where_it_would_not_resolve_the_"
    "cancellation": "the cancellation refusal and its words run by default in "
                    "test_scores_that_cancel_beyond_what_float32_resolves_are_refused; CI's slow "
                    "step checks the float64 limit of its advice",
    "test_linear_maps.py::test_the_same_scores_as_the_same_map_written_out[rescale]":
        "registrations of the linear and identity rules the default run exercises on other "
        "primitives; CI's slow step compares these maps with their written-out forms",
    "test_keras_sequences.py::test_a_live_keras_model_with_a_padding_mask_explained_at_its_"
    "embedding[rescale]": "the all/any rule it needs runs by default in test_exact_or_refused "
                          "and the fuzz's all_any block",
    "test_two_operand_functions.py::test_two_live_operands_take_the_shapley_split[rescale]":
        "the fuzz's power block runs the two-player split by default; the element-by-element "
        "oracle runs in the slow step",
    "test_certificate.py::test_scores_that_cancel_beyond_what_float32_resolves_are_refused"
    "[reveal_cancel]": "[rescale] runs by default (the same cap on the bound)",
    "test_two_operand_functions.py::test_special_functions_and_complex_values_sum_to_delta"
    "[rescale]": "registrations of the elementwise and linear rules every mode runs by default; "
                 "the two-operand and product checks of the same file run by default",
    "test_transformers.py::test_crediting_a_mask_bias_around_the_cut_is_refused_naming_the_mask":
        "test_linen_transformer_with_a_mask_exact_with_hold_refused_without asserts the same "
        "reading of the mask bias's share by default",
    "test_exact_or_refused.py::test_all_and_any_of_live_predicates_are_exact[reveal_cancel]":
        "[rescale] runs by default (one rule in every mode)",
    "test_two_operand_functions.py::test_two_live_operands_take_the_shapley_split"
    "[reveal_cancel]": "[rescale] runs by default (one rule in every mode)",
    "test_two_operand_functions.py::test_special_functions_and_complex_values_sum_to_delta"
    "[reveal_cancel]": "[rescale] runs by default (the same fused nonlinearities and linear "
                       "maps; RevealCancel's rule on them is the generic one)",
    "test_linear_maps.py::test_the_same_scores_as_the_same_map_written_out[reveal_cancel]":
        "[rescale] runs by default (the same rules; RevealCancel splits them generically)",
    "test_keras_sequences.py::test_a_live_keras_model_with_a_padding_mask_explained_at_its_"
    "embedding[reveal_cancel]": "[rescale] runs by default (the all/any rule is one in every "
                                "mode)",
    "test_structural_ops.py::test_haiku_static_unroll_scores_as_dynamic_unroll[reveal_cancel]":
        "[rescale] runs by default; unstack under RevealCancel by the selection test",
    "test_certificate.py::test_a_rule_off_by_one_percent_is_refused_on_every_zoo_model[rnn]":
        "the mlp and cnn zoo models run by default; loops by test_loops",
    "test_certificate.py::test_a_minus_inf_causal_mask_on_live_scores_is_exact[reveal_cancel]":
        "[rescale] runs by default (the same −inf masking rule)",
    "test_certificate.py::test_a_mask_held_fixed_per_example_makes_the_cut_exact[reveal_cancel]":
        "[rescale] runs by default",
    "test_certificate.py::test_a_mask_from_the_same_ids_is_refused_naming_the_comparison"
    "[reveal_cancel]": "[rescale] runs by default",
    "test_keras_h5.py::test_forward_matches_keras[activations]":
        "the other architectures of the same test run by default",
    "test_keras_sequences.py::test_forward_matches_keras[rnn_stack]":
        "the other sequence architectures run by default",
    "test_keras_sequences.py::test_round_trip_through_keras[rnn_stack]":
        "the other sequence architectures run by default",
    "test_keras_models.py::test_port_round_trip_and_generic_reader[mnist]":
        "[ptc] runs by default (the same reader)",
    "test_cli.py::test_attribute_variants":
        "test_every_method_from_the_cli and test_single_logit_model_has_two_classes run the "
        "CLI's outputs by default",
    "test_targets.py::test_class_difference_and_softmax_normalized":
        "class differences per input: test_targets_per_input",
    "test_targets.py::test_pre_activation_returns_the_logits[probs0]":
        "[probs1] and the by-hand cases run by default",
    "test_conv_transpose.py::test_deeplift_through_a_strided_conv_takes_the_phased_transpose"
    "[reveal_cancel-bfloat16-0.0]": "[rescale-float64] and [reveal_cancel-float64-1000.0] "
                                     "run by default",
    "test_conv_transpose.py::test_deeplift_through_a_strided_conv_takes_the_phased_transpose"
    "[reveal_cancel-float64-0.0]": "[reveal_cancel-float64-1000.0] runs by default",
    "test_chunking.py::test_numpy_inputs_in_chunks_give_the_numbers_of_jax_inputs_at_once"
    "[per_input]": "[shared] runs by default; per-input chunks in test_core_api",
    "test_genomics_lib.py::test_gaps_are_sum_of_unprojected_contributions_minus_delta":
        "gaps: test_certificate and test_dataset",
    "test_targets_per_input.py::test_one_class_per_input_equals_each_input_alone"
    "[reveal_cancel]": "[rescale], [gradient], [integrated_gradients] run by default",
    "test_loops.py::test_summation_to_delta_through_loops[lstm-reveal_cancel]":
        "[lstm-rescale] and [live_constant-reveal_cancel] run by default",
    "test_loops.py::test_summation_to_delta_through_loops[lstm-genomics_default]":
        "[lstm-rescale] runs by default",
    "test_loops.py::test_summation_to_delta_through_loops[reverse_unrolled-reveal_cancel]":
        "[reverse_unrolled-rescale] runs by default",
    "test_modes.py::test_hypothetical_contributions_match_deeplift_definition":
        "test_oracle_limits checks them against their definition by brute force",
    "test_core_api.py::test_batch_size_chunks_give_the_same_result":
        "test_chunking's auto-chunk and NumPy-chunk cases run by default",
    "test_core_api.py::test_half_precision_inputs[bfloat16-reveal_cancel]":
        "the other half-precision cases run by default",
    "test_fuzz_exact.py::test_exact_or_refused_on_random_programs"
    "[conv_max-dense_sigmoid-quotient-float16-genomics_default-gap1e-30]":
        "the other random programs run by default; all of them in the slow step",
    "test_fuzz_exact.py::test_exact_or_refused_on_random_programs"
    "[conv_max_overlap-dense_relu-int_cast-float64-reveal_cancel-gap0.0001]":
        "the other random programs run by default; all of them in the slow step",
    "test_fuzz_exact.py::test_exact_or_refused_on_random_programs"
    "[dense-gate-cond-dense_softplus-float32-genomics_default-gap0.01]":
        "the other random programs run by default; all of them in the slow step",
    "test_chunking.py::test_a_new_number_of_inputs_reuses_a_program_for_more_rows[False]":
        "the same padding with per-pair scores; the averaged variant runs by default",
    "test_exact_or_refused.py::test_float64_multipliers_through_float32_operations_stay_"
    "float64[reveal_cancel]": "the cast's ratio and the float64 transposes are the same rules "
                              "in both modes; the rescale variant runs by default",
    "test_certificate.py::test_a_padded_small_call_names_the_worst_pair_among_its_own_inputs":
        "checks_on_host(n=) leaves padded rows out of the summary for padded chunks too, which "
        "test_a_padded_last_chunk_counts_only_the_calls_pairs checks by default",
    "test_two_operand_functions.py::test_running_products_and_log_sum_exps_are_their_"
    "associative_scans[reveal_cancel]": "the expansion is the same in both modes; its rules "
                                        "(products, logaddexp) run in RevealCancel by default",
    "test_two_operand_functions.py::test_running_products_and_log_sum_exps_are_their_"
    "associative_scans[rescale]": "test_a_running_product_and_log_sum_exp_in_one_model_equal_"
                                  "their_scans runs both expansions by default, in one model",
}


def pytest_collection_modifyitems(config, items):
    """Mark :data:`SLOW_CASES` slow (``-m "not slow"`` then leaves them to the slow step)."""
    for item in items:
        if item.nodeid.split("tests/", 1)[-1] in SLOW_CASES:
            item.add_marker(pytest.mark.slow)
SHARED_DATA = Path(os.environ.get("JAXLIFT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of data sets handed to the project (``../shared/data``)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def x64():
    """Run a test with 64-bit JAX types (``jax_enable_x64``), restored afterwards."""
    with jax.enable_x64(True):
        yield
