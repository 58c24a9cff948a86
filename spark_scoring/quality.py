"""Bad-row rules for jobs: which input rows cannot be scored, and why.

Runs on: the driver (it builds Spark column expressions; Spark evaluates them
on executors).

A row is bad when one of its feature columns is null, NaN, +-infinity, or a
string that does not parse as the number the model needs. Jobs count bad rows
per column in one aggregation (the same job counts the rows in), then either
fail before the partition commits (``bad_rows: fail``) or write them to the
quarantine table with a readable ``quarantine_reason`` (``bad_rows: quarantine``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["FeatureCheck", "feature_checks", "bad_condition", "reason_column", "count_rows"]


@dataclass(frozen=True)
class FeatureCheck:
    column: str
    bad: object        # Column: true when the value cannot be scored
    reason: object     # Column: a message when bad, else null
    needs_cast: bool   # a string column that is parsed to ``target``
    target: object     # Spark DataType the model wants


def feature_checks(schema, columns: Sequence[str], targets: Sequence[object]) -> list[FeatureCheck]:
    """One check per feature column, from the input schema and the model's types."""
    import pyspark.sql.functions as F
    from pyspark.sql.types import DoubleType, FloatType, NumericType, StringType

    checks = []
    types = {f.name: f.dataType for f in schema.fields}
    for name, target in zip(columns, targets):
        col = F.col(_q(name))  # a name with dots or backticks is one column
        source = types[name]
        quoted = name  # reasons are F.lit values, not SQL text: no escaping
        bad = col.isNull()
        reason = F.when(col.isNull(), F.lit(f"{quoted} is null"))
        needs_cast = isinstance(source, StringType) and isinstance(target, NumericType)
        if isinstance(source, (DoubleType, FloatType)):
            inf = F.abs(col) == F.lit(float("inf"))
            bad = bad | F.isnan(col) | inf
            reason = reason.when(F.isnan(col), F.lit(f"{quoted} is NaN")).when(inf, F.lit(f"{quoted} is infinite"))
        elif needs_cast:
            parsed = F.expr(f"try_cast({_q(name)} AS {target.simpleString()})")
            unparsable = parsed.isNull()
            nonfinite = F.isnan(parsed) | (F.abs(parsed) == F.lit(float("inf")))
            bad = bad | unparsable | nonfinite
            reason = reason.when(
                unparsable | nonfinite,
                F.concat(F.lit(f"{quoted}="), F.substring(col, 1, 40), F.lit(f" is not a finite {target.simpleString()}")),
            )
        checks.append(FeatureCheck(name, bad, reason, needs_cast, target))
    return checks


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def bad_condition(checks: Sequence[FeatureCheck]):
    """True for rows that any check rejects (null-safe: never null itself)."""
    import pyspark.sql.functions as F

    cond = F.lit(False)
    for c in checks:
        cond = cond | F.coalesce(c.bad, F.lit(False))
    return cond


def reason_column(checks: Sequence[FeatureCheck]):
    """``"f1 is null; f3 is NaN"`` for bad rows."""
    import pyspark.sql.functions as F

    return F.concat_ws("; ", *[c.reason for c in checks])


def count_rows(df, checks: Sequence[FeatureCheck]) -> tuple[int, int, dict[str, int]]:
    """One Spark job: (rows in, bad rows, bad rows per column)."""
    import pyspark.sql.functions as F

    aggs = [F.count(F.lit(1)).alias("rows_in"), F.sum(bad_condition(checks).cast("long")).alias("bad")]
    aggs += [F.sum(F.coalesce(c.bad, F.lit(False)).cast("long")).alias(f"c{i}") for i, c in enumerate(checks)]
    row = df.agg(*aggs).collect()[0]
    per_column = {c.column: int(row[f"c{i}"] or 0) for i, c in enumerate(checks) if row[f"c{i}"]}
    return int(row["rows_in"]), int(row["bad"] or 0), per_column
