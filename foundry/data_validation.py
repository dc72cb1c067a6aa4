"""Great Expectations 1.x validation of calibration documents, before any calibration runs.

One row per raw document (nulls, empties and duplicates kept, so the suite can see them). The
suite checks: at least one document, no null texts, stripped length within bounds (so no empty
texts), duplicate rate under the bound, no paragraph shared with the evaluation set (by hash of
normalized text), and enough usable tokens for `num_samples` windows of `seq_len` tokens (plus the alpha
search's held-out windows). A failed suite raises `FoundryError` naming each failed expectation.
"""

from __future__ import annotations

import html
import logging
from dataclasses import asdict, dataclass

import pandas as pd

from foundry.data import MIN_OVERLAP_CHARS, normalized_hash, paragraph_hashes
from foundry.errors import FoundryError

SUITE_NAME = "calibration_data"


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    observed: str
    bounds: str


@dataclass(frozen=True)
class DataValidationResult:
    success: bool
    suite: str
    num_documents: int
    num_usable_documents: int
    usable_tokens: int
    tokens_needed: int
    duplicate_rate: float
    evaluation_overlap: int
    outcomes: tuple[ExpectationOutcome, ...]
    great_expectations_version: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DataValidationResult":
        fields = dict(data)
        fields["outcomes"] = tuple(ExpectationOutcome(**outcome) for outcome in data["outcomes"])
        return cls(**fields)

    def failed(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]

    def as_metadata(self) -> dict:
        return {
            "success": self.success,
            "suite": self.suite,
            "num_documents": self.num_documents,
            "num_usable_documents": self.num_usable_documents,
            "usable_tokens": self.usable_tokens,
            "tokens_needed": self.tokens_needed,
            "duplicate_rate": round(self.duplicate_rate, 6),
            "evaluation_overlap": self.evaluation_overlap,
            "failed_expectations": [
                f"{o.expectation}({o.column}): observed {o.observed}, expected {o.bounds}" for o in self.failed()
            ],
            "great_expectations_version": self.great_expectations_version,
        }


def documents_frame(
    documents: list, tokenizer=None, evaluation_paragraphs: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """text, stripped_chars, normalized_hash, usable_tokens (0 for null/empty/repeated documents;
    +1 per document for the EOS separator, as `token_windows` counts them), evaluation_paragraphs
    (how many of the document's paragraphs the evaluation set also holds)."""
    rows = []
    seen: set[str] = set()
    for document in documents:
        text = document if isinstance(document, str) else None
        stripped = len(text.strip()) if text is not None else 0
        digest = normalized_hash(text) if text is not None and stripped else None
        tokens = 0
        if digest is not None and digest not in seen:
            seen.add(digest)
            if tokenizer is not None:
                tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
        shared = len(paragraph_hashes(text) & evaluation_paragraphs) if text else 0
        rows.append(
            {
                "text": text,
                "stripped_chars": stripped,
                "normalized_hash": digest,
                "usable_tokens": tokens,
                "evaluation_paragraphs": shared,
            }
        )
    columns = ["text", "stripped_chars", "normalized_hash", "usable_tokens", "evaluation_paragraphs"]
    return pd.DataFrame(rows, columns=columns).astype(
        {"stripped_chars": "int64", "usable_tokens": "int64", "evaluation_paragraphs": "int64"}
    )


def _suite_expectations(gx, *, tokens_needed, max_duplicate_rate, min_text_chars, max_text_chars):
    e = gx.expectations
    return [
        e.ExpectTableRowCountToBeBetween(min_value=1),
        e.ExpectColumnValuesToNotBeNull(column="text"),
        e.ExpectColumnValuesToBeBetween(column="stripped_chars", min_value=min_text_chars, max_value=max_text_chars),
        e.ExpectColumnProportionOfUniqueValuesToBeBetween(column="normalized_hash", min_value=1.0 - max_duplicate_rate),
        e.ExpectColumnValuesToBeBetween(column="evaluation_paragraphs", max_value=0),
        e.ExpectColumnSumToBeBetween(column="usable_tokens", min_value=tokens_needed),
    ]


def _bounds(kwargs: dict) -> str:
    if kwargs.get("column") == "evaluation_paragraphs":
        return f"no paragraph of the evaluation set (normalized, >= {MIN_OVERLAP_CHARS} chars)"
    parts = [f"{key} {kwargs[key]}" for key in ("min_value", "max_value") if kwargs.get(key) is not None]
    return ", ".join(parts) or "no nulls"


def _observed(result: dict) -> str:
    if "observed_value" in result:
        value = result["observed_value"]
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} unexpected of {result.get('element_count')}"
    return "-"


def validate_calibration_documents(
    frame: pd.DataFrame,
    *,
    tokens_needed: int,
    max_duplicate_rate: float,
    min_text_chars: int,
    max_text_chars: int,
) -> DataValidationResult:
    """Run the GX suite on `documents_frame(...)`; never raises on a failed expectation (see
    `raise_on_failure`)."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("calibration_source")
        .add_dataframe_asset("calibration_documents")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in _suite_expectations(
        gx,
        tokens_needed=tokens_needed,
        max_duplicate_rate=max_duplicate_rate,
        min_text_chars=min_text_chars,
        max_text_chars=max_text_chars,
    ):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="calibration", data=batch, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        kwargs = dict(config.kwargs)
        outcomes.append(
            ExpectationOutcome(
                expectation=config.type,
                column=kwargs.get("column"),
                success=bool(item.success),
                observed=_observed(dict(item.result or {})),
                bounds=_bounds(kwargs),
            )
        )
    hashes = frame["normalized_hash"].dropna()
    return DataValidationResult(
        success=bool(result.success),
        suite=SUITE_NAME,
        num_documents=len(frame),
        num_usable_documents=int((frame["usable_tokens"] > 0).sum()),
        usable_tokens=int(frame["usable_tokens"].sum()),
        tokens_needed=tokens_needed,
        duplicate_rate=float(1.0 - hashes.nunique() / len(hashes)) if len(hashes) else 0.0,
        evaluation_overlap=int((frame["evaluation_paragraphs"] > 0).sum()),
        outcomes=tuple(outcomes),
        great_expectations_version=gx.__version__,
    )


def raise_on_failure(result: DataValidationResult, what: str) -> None:
    failed = result.failed()
    if failed:
        lines = "\n".join(
            f"  - {o.expectation}({o.column or 'table'}): observed {o.observed}; expected {o.bounds}" for o in failed
        )
        raise FoundryError(
            f"{what}: data validation ({result.suite}, Great Expectations) failed {len(failed)} of "
            f"{len(result.outcomes)} expectation(s); no calibration was run:\n{lines}"
        )


def render_validation_html(result: DataValidationResult, what: str = "calibration data") -> str:
    rows = "".join(
        f"<tr style='background:{'#e8f5e9' if o.success else '#ffebee'}'><td>{'pass' if o.success else '<b>FAIL</b>'}</td>"
        f"<td>{html.escape(o.expectation)}</td><td>{html.escape(o.column or 'table')}</td>"
        f"<td>{html.escape(o.observed)}</td><td>{html.escape(o.bounds)}</td></tr>"
        for o in result.outcomes
    )
    status = "passed" if result.success else f"FAILED ({len(result.failed())} expectation(s))"
    facts = (
        f"{result.num_documents} documents, {result.num_usable_documents} usable, {result.usable_tokens} usable tokens "
        f"(needed {result.tokens_needed}), duplicate rate {result.duplicate_rate:.2%}, "
        f"{result.evaluation_overlap} shared with the evaluation set"
    )
    return (
        "<html><body style='font-family:sans-serif'>"
        f"<h2>Data validation: {html.escape(what)} — {status}</h2><p>{html.escape(facts)}</p>"
        "<table border='1' cellpadding='6' style='border-collapse:collapse'>"
        "<tr><th>result</th><th>expectation</th><th>column</th><th>observed</th><th>expected</th></tr>"
        f"{rows}</table><p>Suite {html.escape(result.suite)}, Great Expectations {html.escape(result.great_expectations_version)}</p>"
        "</body></html>"
    )
