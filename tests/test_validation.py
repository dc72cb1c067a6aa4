"""Great Expectations suite on calibration documents: passes on good data, names every failure."""

from __future__ import annotations

import pytest

from foundry.data import (
    MIN_OVERLAP_CHARS,
    builtin_documents,
    evaluation_paragraph_hashes,
    load_documents,
    normalize_text,
    paragraphs,
)
from foundry.data_validation import (
    DataValidationResult,
    documents_frame,
    raise_on_failure,
    render_validation_html,
    validate_calibration_documents,
)
from foundry.errors import FoundryError

BOUNDS = {"max_duplicate_rate": 0.05, "min_text_chars": 5, "max_text_chars": 200_000}


@pytest.fixture(scope="module")
def evaluation_hashes():
    return evaluation_paragraph_hashes(builtin_documents("evaluation"))


def run(documents, tokenizer, evaluation_hashes, tokens_needed=64, **bounds):
    return validate_calibration_documents(
        documents_frame(documents, tokenizer, evaluation_hashes),
        tokens_needed=tokens_needed,
        **{**BOUNDS, **bounds},
    )


def failed_names(result):
    return {(o.expectation, o.column) for o in result.failed()}


def test_builtin_calibration_documents_pass(smollm2_tokenizer, evaluation_hashes):
    documents = builtin_documents("calibration")[:40]
    result = run(documents, smollm2_tokenizer, evaluation_hashes, tokens_needed=8 * 64)
    assert result.success, result.failed()
    assert result.num_documents == result.num_usable_documents == 40
    assert result.usable_tokens >= 8 * 64 and result.evaluation_overlap == 0 and result.duplicate_rate == 0.0
    assert len(result.outcomes) == 6
    raise_on_failure(result, "calibration data")  # no error
    assert DataValidationResult.from_dict(result.to_dict()) == result


def test_bad_documents_fail_each_expectation_and_the_message_names_them(smollm2_tokenizer, evaluation_hashes):
    evaluation_text = builtin_documents("evaluation")[0]
    documents = [
        "A fine calibration paragraph about lists.",
        None,
        "",
        "tiny",
        "a FINE calibration   paragraph about lists.",
        evaluation_text.upper(),
    ]
    result = run(documents, smollm2_tokenizer, evaluation_hashes, tokens_needed=10**6)
    assert not result.success
    assert failed_names(result) == {
        ("expect_column_values_to_not_be_null", "text"),
        ("expect_column_values_to_be_between", "stripped_chars"),
        ("expect_column_proportion_of_unique_values_to_be_between", "normalized_hash"),
        ("expect_column_values_to_be_between", "evaluation_paragraphs"),
        ("expect_column_sum_to_be_between", "usable_tokens"),
    }
    assert result.evaluation_overlap == 1
    with pytest.raises(FoundryError) as error:
        raise_on_failure(result, "calibration data (jsonl)")
    message = str(error.value)
    assert "calibration data (jsonl): data validation" in message and "failed 5 of 6" in message
    assert (
        "no calibration was run" in message and "expect_column_values_to_be_between(evaluation_paragraphs)" in message
    )
    page = render_validation_html(result)
    assert page.count("<b>FAIL</b>") == 5 and "1 shared with the evaluation set" in page


def test_empty_data_fails(smollm2_tokenizer, evaluation_hashes):
    result = run([], smollm2_tokenizer, evaluation_hashes)
    assert ("expect_table_row_count_to_be_between", None) in failed_names(result)
    assert ("expect_column_sum_to_be_between", "usable_tokens") in failed_names(result)


def test_all_duplicate_data_fails_the_duplicate_rate(smollm2_tokenizer, evaluation_hashes):
    documents = ["The same paragraph, over and over again. " * 20] * 10
    result = run(documents, smollm2_tokenizer, evaluation_hashes, tokens_needed=16)
    assert failed_names(result) == {("expect_column_proportion_of_unique_values_to_be_between", "normalized_hash")}
    assert result.duplicate_rate == pytest.approx(0.9)
    assert result.num_usable_documents == 1  # duplicates contribute no tokens


def test_evaluation_paragraphs_inside_text_calibration_data_are_found(tmp_path, smollm2_tokenizer, evaluation_hashes):
    """The text source splits documents at blank lines, so evaluation documents pasted into a
    calibration file arrive as paragraphs: each one is caught, whatever its layout or case."""
    evaluation = builtin_documents("evaluation")[:3]
    pasted = [p for text in evaluation for p in paragraphs(text) if len(normalize_text(p)) >= MIN_OVERLAP_CHARS]
    own = [f"Calibration paragraph {i} about rivers, lakes and the weather of the northern hills." for i in range(20)]
    path = tmp_path / "calibration.txt"
    path.write_text("\n\n".join(own[:10] + [p.upper() for p in pasted] + own[10:]))
    result = run(load_documents("text", str(path)), smollm2_tokenizer, evaluation_hashes, tokens_needed=64)
    assert not result.success
    assert failed_names(result) == {("expect_column_values_to_be_between", "evaluation_paragraphs")}
    assert result.evaluation_overlap == len(pasted) > 3


def test_builtin_calibration_split_shares_no_paragraph_with_evaluation(evaluation_hashes):
    """pydoc topics repeat whole sections (`def` and `function`): the calibration split drops them."""
    from foundry.data import paragraph_hashes

    shared = [text for text in builtin_documents("calibration") if paragraph_hashes(text) & evaluation_hashes]
    assert shared == []
