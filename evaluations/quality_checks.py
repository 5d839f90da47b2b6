"""Great Expectations data-quality suite for a chunk-table version; a failed expectation blocks promotion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.schemas import chunk_schema
from tasks.store.interface import TableVersion

logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds of the suite (from the gate policy)."""

    max_duplicate_text_rate: float = 0.05
    max_empty_documents: int = 0
    row_count_band: float = 0.5  # candidate rows within ±50 % of production's
    norm_tolerance: float = 1e-2


@dataclass(frozen=True)
class CheckResult:
    """One expectation's outcome, flattened for reports."""

    expectation: str
    column: str
    success: bool
    observed: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "expectation": self.expectation,
            "column": self.column,
            "success": self.success,
            "observed": self.observed,
        }


def chunk_frame(table: TableVersion) -> pd.DataFrame:
    """A version of the chunk table with derived vector columns for the suite."""
    data = table.rows(["chunk_id", "doc_id", "text", "n_tokens", "vector"])
    vectors = data.column("vector")
    dim = vectors.type.list_size
    flat = vectors.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) if len(data) else None
    frame = data.drop_columns(["vector"]).to_pandas()
    frame["vector_dim"] = dim
    frame["vector_finite"] = np.isfinite(flat).all(axis=1) if flat is not None else []
    frame["vector_norm"] = np.linalg.norm(np.nan_to_num(flat), axis=1) if flat is not None else []
    return frame


def run_quality_checks(
    table: TableVersion,
    dim: int,
    max_tokens: int,
    limits: QualityLimits,
    expected_doc_ids: set[str] | None = None,
    production_rows: int | None = None,
) -> list[CheckResult]:
    """Validate the table with a GX expectation suite; returns one result per expectation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # GX sets this module's logger to INFO when it is imported (above); its one INFO line names a temp directory
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    frame = chunk_frame(table)
    docs = frame.groupby("doc_id")["text"].apply(lambda t: int(sum(len(s.strip()) for s in t))).reset_index()
    docs.columns = ["doc_id", "chars"]
    if expected_doc_ids:
        missing = sorted(expected_doc_ids - set(docs["doc_id"]))
        docs = pd.concat([docs, pd.DataFrame({"doc_id": missing, "chars": [0] * len(missing)})], ignore_index=True)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("ragops")
    E = gx.expectations
    expected_columns = [f.name for f in chunk_schema(dim)]
    chunk_expectations: list[Any] = [
        E.ExpectTableColumnsToMatchSet(column_set=[*expected_columns], exact_match=True),
        E.ExpectColumnValuesToBeUnique(column="chunk_id"),
        E.ExpectColumnValuesToNotBeNull(column="text"),
        E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
        E.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=max_tokens),
        E.ExpectColumnValuesToBeBetween(column="vector_dim", min_value=dim, max_value=dim),
        E.ExpectColumnValuesToBeInSet(column="vector_finite", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(
            column="vector_norm", min_value=1 - limits.norm_tolerance, max_value=1 + limits.norm_tolerance
        ),
        E.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="text", min_value=1 - limits.max_duplicate_text_rate, max_value=1
        ),
    ]
    if production_rows:
        chunk_expectations.append(
            E.ExpectTableRowCountToBeBetween(
                min_value=int(production_rows * (1 - limits.row_count_band)),
                max_value=int(production_rows * (1 + limits.row_count_band)) + 1,
            )
        )
    doc_expectations: list[Any] = [
        E.ExpectColumnValuesToBeBetween(
            column="chars",
            min_value=1,
            # a limit above the document count allows all (the evaluate flow refuses such a policy first)
            mostly=max(0.0, 1 - limits.max_empty_documents / len(docs)) if len(docs) else 1.0,
        )
    ]

    results: list[CheckResult] = [_type_check(table, dim)]
    table_columns = pd.DataFrame({name: [] for name in table.schema().names})
    batches = [
        ("chunk schema", table_columns, chunk_expectations[:1]),
        ("chunks", frame, chunk_expectations[1:]),
        ("documents", docs, doc_expectations),
    ]
    for name, data, expectations in batches:
        asset = source.add_dataframe_asset(name.replace(" ", "_"))
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": data})
        suite = gx.ExpectationSuite(name=f"ragops_{name.replace(' ', '_')}", expectations=expectations)
        outcome = batch.validate(suite)
        for r in outcome.results:
            config = r.expectation_config
            assert config is not None  # GX sets it on every result of a suite validation
            observed = r.result.get("observed_value")
            if observed is None and "unexpected_count" in r.result:
                observed = f"{r.result['unexpected_count']} unexpected ({r.result.get('unexpected_percent', 0):.2f} %)"
            results.append(
                CheckResult(
                    expectation=config.type,
                    column=str(config.kwargs.get("column", "(table)")),
                    success=bool(r.success),
                    observed=_short(observed),
                )
            )
    return results


def _type_check(table: TableVersion, dim: int) -> CheckResult:
    """Column types must equal the declared schema (GX checks names and values, pyarrow checks types)."""
    expected = {f.name: f.type for f in chunk_schema(dim)}
    wrong = [
        f"{f.name}: {f.type} (want {expected[f.name]})"
        for f in table.schema()
        if f.name in expected and not f.type.equals(expected[f.name])
    ]
    return CheckResult("schema_types_match", "(table)", not wrong, "; ".join(wrong) or "all types as declared")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."
