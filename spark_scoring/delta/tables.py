"""Delta tables named by path or by catalog name: existence, versions, history, layout.

Runs on: the driver (every method takes the SparkSession). A path table on the
local file system has its log read in this process (:mod:`.log`, delta-kernel:
milliseconds instead of a Spark query); anything else, or anything delta-rs
cannot read, is asked of Spark.
"""
from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass
from typing import Any

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from . import log as delta_log
from .sql import quote_identifier, quote_table_name

__all__ = ["TableRef", "as_ref", "non_negative_int", "is_connect", "partition_counts"]


# -------------------------------------------------------------------- TableRef
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class TableRef:
    """A Delta table named by path or by metastore name.

    ``name`` is the path (made absolute when local and scheme-less, so Spark and
    Delta agree whatever the cwd) or the dotted table name.
    """

    name: str
    is_path: bool

    @classmethod
    def parse(cls, text: str) -> "TableRef":
        """A path if ``text`` has ``/`` or ``\\`` or a URI scheme, else a table name."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"table reference must be a non-empty string, got {text!r}")
        text = text.strip()
        if _URI_SCHEME.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):
            return cls(text, True)
        if "/" in text or "\\" in text:
            return cls(os.path.abspath(text), True)
        quote_table_name(text)  # validates the parts
        return cls(text, False)

    @property
    def sql(self) -> str:
        """The table in SQL text: ``delta.`/path``` or ```schema`.`table```."""
        if self.is_path:
            return "delta." + quote_identifier(self.name)
        return quote_table_name(self.name)

    def local_log(self, spark: SparkSession) -> str | None:
        """The folder delta-rs reads this table's log from (None: ask Spark)."""
        return delta_log.log_path(self.name, not is_connect(spark)) if self.is_path else None

    def _from_log(self, spark: SparkSession, ask, *args):
        """``ask(folder, *args)`` of :mod:`.log` for a local table; None: ask Spark."""
        local = self.local_log(spark)
        return ask(local, *args) if local else None

    def exists(self, spark: SparkSession) -> bool:
        found = self._from_log(spark, delta_log.exists)
        if found is not None:
            return found
        if self.is_path and is_connect(spark):
            try:
                spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT 1").collect()
                return True
            except AnalysisException:  # [DELTA_TABLE_ONLY_OPERATION]: no Delta table there
                return False
        if self.is_path:
            return bool(DeltaTable.isDeltaTable(spark, self.name))
        return bool(spark.catalog.tableExists(self.sql))

    def delta_table(self, spark: SparkSession) -> DeltaTable:
        if self.is_path:
            return DeltaTable.forPath(spark, self.name)
        return DeltaTable.forName(spark, self.sql)

    def read(self, spark: SparkSession, version: int | None = None) -> DataFrame:
        """The table, or its snapshot at ``version`` (time travel, ``versionAsOf``)."""
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", non_negative_int("version", version))
        return reader.load(self.name) if self.is_path else reader.table(self.sql)

    def latest_version(self, spark: SparkSession) -> int:
        version = self._from_log(spark, delta_log.latest_version)
        if version is not None:
            return version
        return int(spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT 1").head()["version"])

    def history(self, spark: SparkSession, limit: int | None = None) -> list[dict]:
        """``DESCRIBE HISTORY`` rows as dicts, newest first."""
        limit_sql = f" LIMIT {non_negative_int('limit', limit)}" if limit is not None else ""
        entries = self._from_log(spark, delta_log.history, limit)
        if entries is not None:
            return entries
        # SQL, not DeltaTable.history(): the same rows, and it also works on Spark
        # Connect servers without the Delta Connect plugin.
        frame = spark.sql(f"DESCRIBE HISTORY {self.sql}{limit_sql}")
        return [row.asDict(recursive=True) for row in frame.orderBy(F.col("version").desc()).collect()]

    def _describe(self, spark: SparkSession) -> tuple[list[str], str]:
        # DESCRIBE TABLE EXTENDED reads only the table's metadata; DESCRIBE DETAIL
        # also counts files, which rebuilds the table state after every commit.
        parts, location, section = [], self.name, ""
        for row in spark.sql(f"DESCRIBE TABLE EXTENDED {self.sql}").collect():
            key = row["col_name"] or ""
            if key.startswith("# ") or not key:
                section = key if key != "# col_name" else section
            elif section == "# Partition Information":
                parts.append(key)
            elif section == "# Detailed Table Information" and key == "Location":
                location = row["data_type"]
        return parts, location

    def partition_columns(self, spark: SparkSession) -> list[str]:
        columns = self._from_log(spark, delta_log.partition_columns)
        return columns if columns is not None else self._describe(spark)[0]

    def location(self, spark: SparkSession) -> str:
        """Where the table's files are (the path itself for path tables)."""
        return self.name if self.is_path else self._describe(spark)[1]

    def table_properties(self, spark: SparkSession) -> dict:
        return dict(spark.sql(f"DESCRIBE DETAIL {self.sql}").head()["properties"] or {})


def as_ref(ref: TableRef | str) -> TableRef:
    return ref if isinstance(ref, TableRef) else TableRef.parse(ref)


def non_negative_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


def is_connect(spark: SparkSession) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


# ------------------------------------------------------------------- listing
def partition_counts(df: DataFrame, column: str) -> dict[Any, int]:
    """``{partition value: row count}`` in one Spark job; None is a value too."""
    grouped = df.groupBy(F.col(quote_identifier(column)).alias("value")).count()
    return {row["value"]: int(row["count"]) for row in grouped.collect()}
