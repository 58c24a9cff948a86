"""Model problems found before any write: exit code 2, the output table unchanged.

- The MLflow registry unreachable (``MLFLOW_TRACKING_URI=http://127.0.0.1:9``,
  nothing listens there): once through the real ``spark-scoring`` console
  script in a child process, so the exit code is the process's.
- An alias deleted between two runs of the same job.
- A model version whose artifacts are corrupt (a garbage pickle; a missing MLmodel).
- A model URI pointing outside the registry (``file:///etc``, a folder with no MLmodel).

Each test first snapshots the output table's Delta version and rows, and
checks both are the same after the failed run.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import reliability_helpers as H
from spark_scoring import cli
from spark_scoring import run_job
from spark_scoring.ops.progress import Reporter


@pytest.fixture(scope="module")
def scored(spark, registry, rel_input, tmp_path_factory):
    """An output table with one partition scored: what a failed run must not touch."""
    out = str(tmp_path_factory.mktemp("model_faults") / "scores")
    run_job(H.job_config(rel_input, out), partitions=["p00"], spark=spark, reporter=Reporter(quiet=True))
    return out


def _snapshot(spark, out):
    return H.latest_version(spark, out), H.rows(spark, out)


def _cli(tmp_path: Path, cfg: dict, capsys) -> tuple[int, str]:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = cli.main(["run", "--config", str(path), "--partition", "p01", "--quiet"])
    return code, capsys.readouterr().err


def _register_sklearn(name: str, alias: str) -> tuple[str, str]:
    """Log and register a small scikit-learn model; (version, local artifact folder)."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import Ridge

    from spark_scoring.demo import FEATURES

    x = pd.DataFrame(np.random.default_rng(0).normal(size=(50, len(FEATURES))), columns=list(FEATURES))
    model = Ridge().fit(x, x[FEATURES[0]] * 2.0)
    with mlflow.start_run(run_name=f"{name}_reliability"):
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(x, model.predict(x)),
            serialization_format="cloudpickle", registered_model_name=name, pip_requirements=["scikit-learn"],
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    location = mlflow.get_logged_model(info.model_id).artifact_location
    return version, location[len("file://"):] if location.startswith("file://") else location


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_registry_unreachable_exits_2_before_any_write(spark, registry, rel_input, scored, tmp_path):
    before = _snapshot(spark, scored)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(H.job_config(rel_input, scored)))
    env = H.child_env(None, SPARK_SCORING_MASTER="local[1]", MLFLOW_TRACKING_URI="http://127.0.0.1:9",
                      MLFLOW_REGISTRY_URI="http://127.0.0.1:9",
                      # MLflow retries a refused connection 7 times with backoff by default (minutes)
                      MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0")
    code, log = H.run([Path(H.PYTHON).parent / "spark-scoring", "run", "--config", path, "--partition", "p01"],
                      env=env, log=tmp_path / "cli.log", timeout=900)
    assert code == 2, log[-4000:]
    assert ("RegistryUnavailableError: could not reach the MLflow registry at 'http://127.0.0.1:9' to resolve "
            "'models:/demo_churn@champion'") in log
    assert "Fix: check the job config's mlflow.tracking_uri / mlflow.registry_uri (or MLFLOW_TRACKING_URI" in log
    assert "ValueError" not in log  # refused connections, not a malformed setting
    # the console script's quiet console: none of Spark's start-up banner, Ivy or progress bars
    assert "Setting default log level" not in log and ":: resolving dependencies" not in log, log[-4000:]
    assert _snapshot(spark, scored) == before


@pytest.mark.slow
def test_alias_deleted_between_runs_exits_2_naming_what_exists(spark, registry, rel_input, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    version, _ = _register_sklearn("rel_alias_model", "live")
    out = str(tmp_path / "scores")
    cfg = H.job_config(rel_input, out, model="models:/rel_alias_model@live")
    assert _cli(tmp_path, cfg, capsys)[0] == 0
    before = _snapshot(spark, out)
    MlflowClient().delete_registered_model_alias("rel_alias_model", "live")
    code, err = _cli(tmp_path, cfg, capsys)
    assert code == 2, err
    assert "ModelResolutionError: model URI 'models:/rel_alias_model@live': model 'rel_alias_model' has no alias @live" in err
    assert f"Registered versions: [{version}]" in err and "aliases: none" in err
    assert _snapshot(spark, out) == before


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage_pickle", "missing_mlmodel"])
def test_corrupt_model_artifacts_exit_2_before_any_write(spark, registry, rel_input, scored, tmp_path, capsys, damage):
    name = f"rel_corrupt_{damage}"
    version, folder = _register_sklearn(name, "live")
    if damage == "garbage_pickle":
        pickles = list(Path(folder).rglob("model.pkl"))
        assert pickles, list(Path(folder).rglob("*"))
        for p in pickles:
            p.write_bytes(b"\x80\x04not a pickle at all" * 10)
        words = (f"ModelLoadError: model 'models:/{name}/{version}' (resolved from 'models:/{name}@live'; "
                 "sklearn, cloudpickle) could not be loaded from its artifacts: UnpicklingError")
    else:
        (Path(folder) / "MLmodel").unlink()
        words = "ModelLoadError: "
    before = _snapshot(spark, scored)
    code, err = _cli(tmp_path, H.job_config(rel_input, scored, model=f"models:/{name}@live"), capsys)
    assert code == 2, err
    assert words in err, err
    assert "Fix: re-log the model" in err or "Fix: check the artifact store" in err, err
    assert _snapshot(spark, scored) == before


@pytest.mark.slow
@pytest.mark.parametrize("uri", ["file:///etc", "/etc", "{tmp}/no_model_here"])
def test_model_uri_outside_the_registry_exits_2(spark, registry, rel_input, scored, tmp_path, capsys, uri):
    uri = uri.format(tmp=tmp_path)
    os.makedirs(tmp_path / "no_model_here", exist_ok=True)
    before = _snapshot(spark, scored)
    code, err = _cli(tmp_path, H.job_config(rel_input, scored, model=uri), capsys)
    assert code == 2, err
    assert "ModelResolutionError" in err and "no MLmodel file" in err, err
    assert _snapshot(spark, scored) == before
