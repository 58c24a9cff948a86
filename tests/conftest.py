"""The one shared test fixture set.

- ``spark``: a session-scoped local SparkSession with Delta (reuses an active one); new
  tables get deletion vectors, as Databricks makes them.
- ``registry``: a real MLflow sqlite tracking + model registry in a temp folder,
  with real scikit-learn and torch models registered (versions and aliases),
  built by the same code as the README demo (``spark_scoring.demo``).
- ``zoo``: models logged the way MLflow 3.17 logs them by default (torch pt2,
  scikit-learn skops, TorchScript, pyfunc with every column type, params,
  model_config, struct and tensor outputs), registered in ``registry``.
- ``tmp_table``: a fresh Delta table path per test.

Slow tests (separate processes, ``local-cluster``, ``spark-submit``) carry the
``slow`` marker; CI runs them too (see ``.ci/run``).
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/model_zoo.py

os.environ.setdefault("SPARK_SCORING_LOG_LEVEL", "ERROR")
# Anything a test logs to MLflow without the `registry` fixture lands in a temp
# folder, never in ./mlruns of the checkout.
if "MLFLOW_TRACKING_URI" not in os.environ:
    import tempfile

    os.environ["MLFLOW_TRACKING_URI"] = (Path(tempfile.mkdtemp(prefix="spark_scoring_mlruns_")) / "mlruns").as_uri()


@pytest.fixture(scope="session")
def spark():
    from spark_scoring.session import get_spark

    session = get_spark(
        "spark_scoring_tests",
        master="local[2]",
        conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2",
              # tables the way Databricks makes them (DBR 14.1+): deletion vectors on for every new table
              "spark.databricks.delta.properties.defaults.enableDeletionVectors": "true"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real MLflow registry (sqlite) holding the demo models; see demo.register_models."""
    from spark_scoring import demo

    root = tmp_path_factory.mktemp("mlflow")
    info = demo.setup_registry(root)
    yield info


@pytest.fixture(scope="session")
def zoo(registry):
    """Models logged the way MLflow 3.17 logs them by default (pt2, skops, pyfunc forms): tests/model_zoo.py."""
    import model_zoo

    return model_zoo.build()


@pytest.fixture()
def tmp_table(tmp_path):
    """A path for a Delta table that does not exist yet."""
    return str(tmp_path / f"t_{uuid.uuid4().hex[:8]}")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: separate processes or clusters; minutes")
