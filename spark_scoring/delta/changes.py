"""The Change Data Feed: turn it on, read the rows a range of versions inserted or updated.

Runs on: the driver.
"""
from __future__ import annotations

import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ..errors import ChangeFeedError
from .tables import TableRef, as_ref, non_negative_int

__all__ = ["enable_change_data_feed", "read_changes"]


# -------------------------------------------------------------- change feed
def enable_change_data_feed(spark: SparkSession, ref: TableRef | str) -> None:
    """Turn on Change Data Feed (``delta.enableChangeDataFeed = true``) from the next commit."""
    spark.sql(f"ALTER TABLE {as_ref(ref).sql} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")


_SNAPSHOT_FIX = "run a full `input.mode: snapshot` job once"


_CDF_CAUSES = (  # (Delta's error text, cause, fix)
    (r"DELTA_MISSING_CHANGE_DATA|change data was not recorded",
     "Change Data Feed was not enabled at some version in that range",
     f"enable it (enable_change_data_feed: delta.enableChangeDataFeed = true), {_SNAPSHOT_FIX}, "
     "and start incremental runs after the version that enabled it"),
    (r"DELTA_CDC_START_VERSION_AFTER_LATEST", "the start version is past the latest version",
     "start at most at the latest version; the checkpoint may belong to another table"),
    (r"DELTA_LOG_FILE_NOT_FOUND|DELTA_CHANGE_DATA_FILE_NOT_FOUND|VersionNotFound|FileNotFoundException",
     "the versions are past log / change data retention (log cleaned up or vacuumed)",
     f"{_SNAPSHOT_FIX}, and raise delta.logRetentionDuration if runs are further apart"),
)


def read_changes(spark: SparkSession, ref: TableRef | str, start_version: int,
                 end_version: int | None = None) -> DataFrame:
    """Rows inserted or updated (``update_postimage``) in versions ``start_version``
    to ``end_version`` (inclusive; None: latest), with ``_change_type`` and
    ``_commit_version``. What Delta checks while planning raises :class:`ChangeFeedError`;
    change files vacuumed later surface only when the result is computed."""
    ref = as_ref(ref)
    start = non_negative_int("start_version", start_version)
    if end_version is not None and non_negative_int("end_version", end_version) < start:
        raise ValueError(f"end_version {end_version} is before start_version {start}")

    def fail(cause: str, fix: str) -> ChangeFeedError:
        return ChangeFeedError(f"cannot read changes of {ref.name} from version {start}: {cause}; {fix}")

    if not ref.exists(spark):
        raise fail("the table does not exist", "check the input table name")
    latest = ref.latest_version(spark)
    if start > latest:
        raise fail(f"the table's latest version is {latest}", _CDF_CAUSES[1][2])
    reader = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start)
    if end_version is not None:
        reader = reader.option("endingVersion", int(end_version))
    try:
        changes = reader.load(ref.name) if ref.is_path else reader.table(ref.sql)
        changes = changes.where(F.col("_change_type").isin("insert", "update_postimage"))
        if getattr(changes, "_jdf", None) is not None:
            # Delta checks the range when the scan is planned, not at load: plan now
            # (no job runs; the DataFrame keeps the plan for the caller's action).
            changes._jdf.queryExecution().executedPlan()
    except Exception as exc:
        for pattern, cause, fix in _CDF_CAUSES:
            if re.search(pattern, str(exc)):
                raise fail(cause, fix) from exc
        raise
    return changes
