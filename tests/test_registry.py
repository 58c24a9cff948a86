"""spark_scoring.registry: resolving model URIs to one pinned version.

A real sqlite MLflow registry (``registry`` fixture) with the demo models:
demo_churn v1 @champion / v2 @challenger (torch), demo_fraud (sklearn,
predict_proba), demo_price (sklearn regressor), demo_segments (pyfunc struct).
No Spark here: resolution runs on the driver before any job.
"""
from __future__ import annotations

import os
import shutil
import time

import mlflow
import pyarrow as pa
import pytest
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from spark_scoring import (
    ModelLoadError,
    ModelResolutionError,
    RegistryUnavailableError,
    ScoringError,
    ScoringModel,
    load_model,
)
from spark_scoring.demo import FEATURES
from pathlib import Path

from spark_scoring.executor.specs import OutputSpec
from spark_scoring.model.uri import parse_model_uri

# "Registered versions: [2, 1]" (later tests may add versions above 2)
CHURN_VERSIONS = r"Registered versions: \[(\d+, )*2, 1\]; aliases: .*@champion -> v1"


@pytest.fixture(scope="module")
def client(registry):
    return MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)


def mlmodel_run_id(model: ScoringModel) -> str:
    return Model.load(os.path.join(model.local_path, "MLmodel")).run_id


# ---------------------------------------------------------------------------
# resolution and pinning
# ---------------------------------------------------------------------------

def test_alias_resolves_to_pinned_version(client):
    m = load_model("models:/demo_churn@champion")
    assert m.uri == "models:/demo_churn/1"
    assert m.source_uri == "models:/demo_churn@champion"
    assert (m.name, m.version, m.alias) == ("demo_churn", "1", "champion")
    assert m.run_id == client.get_model_version("demo_churn", "1").run_id
    assert m.run_id == mlmodel_run_id(m)  # the downloaded artifacts are v1's
    assert m.flavor == "pytorch"
    assert m.signature is not None
    assert m.signature.inputs.input_names() == list(FEATURES)
    assert m.inputs.names == FEATURES
    assert m.inputs.types == tuple(pa.float32() for _ in FEATURES)
    assert m.output == OutputSpec("scalar", pa.float64())
    assert m.display_name == "demo_churn"
    assert os.path.isfile(os.path.join(m.local_path, "MLmodel"))


def test_challenger_alias_and_explicit_version(client):
    challenger = load_model("models:/demo_churn@challenger")
    v2 = load_model("models:/demo_churn/2")
    assert challenger.uri == v2.uri == "models:/demo_churn/2"
    assert challenger.version == v2.version == "2"
    assert v2.alias is None and challenger.alias == "challenger"
    assert v2.run_id == client.get_model_version("demo_churn", "2").run_id
    assert v2.run_id != load_model("models:/demo_churn/1").run_id
    # same pinned version, same cache key, whichever way it was named
    assert challenger.fingerprint == v2.fingerprint


@pytest.mark.parametrize("uri", ["models:/demo_churn/latest", "models:/demo_churn/LATEST"])
def test_latest_is_the_highest_version(client, uri):
    highest = max(int(v.version) for v in client.search_model_versions("name='demo_churn'"))
    m = load_model(uri)
    assert m.version == str(highest)
    assert m.uri == f"models:/demo_churn/{highest}"
    assert m.alias is None


def test_sklearn_predict_proba_model():
    m = load_model("models:/demo_fraud@champion")
    assert (m.uri, m.flavor, m.predict_method) == ("models:/demo_fraud/1", "sklearn", "predict_proba")
    assert m.inputs.types == tuple(pa.float64() for _ in FEATURES)
    assert m.output == OutputSpec("array", pa.list_(pa.float64()))


def test_sklearn_regressor_and_pyfunc_struct_models():
    price = load_model("models:/demo_price/1")
    assert (price.flavor, price.predict_method) == ("sklearn", "predict")
    assert price.output == OutputSpec("scalar", pa.float64())
    seg = load_model("models:/demo_segments@champion")
    assert (seg.uri, seg.flavor) == ("models:/demo_segments/1", "pyfunc")
    assert seg.inputs.names == ("tenure_months", "support_calls")
    assert seg.output.kind == "struct"
    assert seg.output.fields == ("score", "segment")
    assert seg.output.arrow_type == pa.struct([("score", pa.float64()), ("segment", pa.string())])


def test_runs_uri(client):
    run_id = client.get_model_version("demo_churn", "1").run_id
    uri = f"runs:/{run_id}/model"
    m = load_model(uri)
    assert m.uri == m.source_uri == uri
    assert (m.name, m.version, m.alias) == (None, None, None)
    assert m.run_id == run_id
    assert m.flavor == "pytorch"
    assert m.display_name == uri
    assert m.output == OutputSpec("scalar", pa.float64())


def test_local_path_and_file_uri(tmp_path):
    src = load_model("models:/demo_fraud/1")
    folder = tmp_path / "fraud_model"
    shutil.copytree(src.local_path, folder)
    m = load_model(str(folder))
    assert m.uri == str(folder) and os.path.isabs(m.uri)
    assert (m.name, m.version, m.alias) == (None, None, None)
    assert m.run_id == src.run_id  # read from the MLmodel file
    assert (m.flavor, m.predict_method) == ("sklearn", "predict_proba")
    assert m.output == src.output
    assert m.fingerprint != src.fingerprint  # another URI, another cache key
    by_file_uri = load_model(folder.as_uri())
    assert by_file_uri.uri == str(folder)
    assert by_file_uri.fingerprint == m.fingerprint


def test_relative_local_path_is_made_absolute(tmp_path, monkeypatch):
    shutil.copytree(load_model("models:/demo_price/1").local_path, tmp_path / "price")
    monkeypatch.chdir(tmp_path)
    m = load_model("price")
    assert m.uri == str(tmp_path / "price")


def test_loaded_model_is_passed_through():
    m = load_model("models:/demo_price/1")
    assert load_model(m) is m


def test_moving_the_alias_does_not_change_a_loaded_model(client):
    before = load_model("models:/demo_churn@champion")
    assert before.version == "1"
    client.set_registered_model_alias("demo_churn", "champion", "2")
    try:
        assert before.uri == "models:/demo_churn/1" and before.version == "1"
        assert mlmodel_run_id(before) == client.get_model_version("demo_churn", "1").run_id
        with pytest.raises(Exception):
            before.version = "2"  # frozen: nothing can re-point it
        after = load_model("models:/demo_churn@champion")
        assert after.uri == "models:/demo_churn/2" and after.version == "2"
        assert after.run_id != before.run_id
    finally:
        client.set_registered_model_alias("demo_churn", "champion", "1")
    assert load_model("models:/demo_churn@champion").version == "1"


# ---------------------------------------------------------------------------
# errors: unknown names, versions, aliases, malformed URIs
# ---------------------------------------------------------------------------

def test_unknown_model_lists_close_names():
    with pytest.raises(
        ModelResolutionError,
        match=r"^model URI 'models:/demo_chrun@champion': no registered model named 'demo_chrun' in registry '[^']+'\. "
        r"Did you mean: demo_churn\b.*Fix: register the model, correct the name, or point mlflow\.registry_uri",
    ):
        load_model("models:/demo_chrun@champion")


def test_unknown_model_without_close_names_lists_registered_models():
    with pytest.raises(
        ModelResolutionError,
        match=r"no registered model named 'zzz_qq' in registry '[^']+'\. Registered models: \[.*'demo_churn'.*'demo_segments'.*\]",
    ):
        load_model("models:/zzz_qq/1")


def test_unknown_alias_lists_versions_and_aliases():
    with pytest.raises(
        ModelResolutionError,
        match=r"^model URI 'models:/demo_churn@nope': model 'demo_churn' has no alias @nope in registry '[^']+'\. " + CHURN_VERSIONS,
    ) as info:
        load_model("models:/demo_churn@nope")
    assert "@challenger -> v2" in str(info.value)
    assert not isinstance(info.value, (RegistryUnavailableError, ModelLoadError))


def test_unknown_version_lists_versions_and_aliases():
    with pytest.raises(
        ModelResolutionError,
        match=r"^model URI 'models:/demo_churn/99': model 'demo_churn' has no version 99 in registry '[^']+'\. " + CHURN_VERSIONS,
    ):
        load_model("models:/demo_churn/99")


def test_non_numeric_version():
    with pytest.raises(
        ModelResolutionError,
        match=r"version 'abc' is not a number\. Fix: use models:/demo_churn/<number>, models:/demo_churn/latest or "
        r"models:/demo_churn@<alias> \(registry stages are deprecated.*\)\. " + CHURN_VERSIONS,
    ):
        load_model("models:/demo_churn/abc")


@pytest.mark.parametrize(
    "uri", ["models:/demo_churn/1/extra", "models:demo_churn", "models:/", "models:/demo_churn@", "models:/a@b/1"]
)
def test_malformed_models_uri(uri):
    with pytest.raises(ModelResolutionError, match=r"is not of the form models:/<name>@<alias>, models:/<name>/<version>"):
        load_model(uri)


@pytest.mark.parametrize("uri", ["", "   "])
def test_empty_uri(uri):
    with pytest.raises(ModelResolutionError, match=r"is empty\. Fix: give models:/<name>@<alias>"):
        load_model(uri)


def test_missing_local_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelResolutionError, match=rf"no MLmodel file at '{missing}'"):
        load_model(str(missing))


def test_unknown_run_is_a_resolution_error():
    with pytest.raises(ModelResolutionError, match=r"runs:/0123456789abcdef0123456789abcdef/model"):
        load_model("runs:/0123456789abcdef0123456789abcdef/model")


def test_parse_model_uri_parts():
    def parts(uri):
        p = parse_model_uri(uri)
        return {k: v for k, v in vars(p).items() if v is not None and k != "text"}

    assert parts("models:/m@a") == {"kind": "registered", "name": "m", "alias": "a"}
    assert parts("models:/m/3") == {"kind": "registered", "name": "m", "version": "3"}
    assert parts("models:/m/Latest") == {"kind": "registered", "name": "m", "version": "latest"}
    assert parts("models:/m-0123abcd") == {"kind": "logged", "model_id": "m-0123abcd"}
    assert parts("runs:/abc/model") == {"kind": "run", "run_id": "abc", "path": "model"}
    assert parts("runs:/abc/sub/model/") == {"kind": "run", "run_id": "abc", "path": "sub/model"}
    assert parts("/some/dir") == {"kind": "path", "path": "/some/dir"}
    assert parts(Path("/some/dir")) == {"kind": "path", "path": "/some/dir"}
    uc = parse_model_uri("models:/main.ml.churn@champion")
    assert (uc.kind, uc.name, uc.alias, uc.unity_catalog) == ("registered", "main.ml.churn", "champion", True)
    uc3 = parse_model_uri("models:/main.ml.churn/3")
    assert (uc3.name, uc3.version, uc3.unity_catalog) == ("main.ml.churn", "3", True)
    assert not parse_model_uri("models:/churn@champion").unity_catalog
    with pytest.raises(ModelResolutionError, match=r"runs:/<run_id>/<artifact path>"):
        parse_model_uri("runs:/only_a_run_id")


def test_a_registered_name_without_version_reads_as_a_logged_model_id_as_in_mlflow_3():
    with pytest.raises(
        ModelResolutionError,
        match=r"no logged model with id 'demo_churn'.*A registered model 'demo_churn' exists: name a version or "
              r"alias, e.g\. models:/demo_churn@champion",
    ):
        load_model("models:/demo_churn")


def test_unity_catalog_names_resolve_against_the_configured_registry_and_say_which():
    with pytest.raises(
        ModelResolutionError,
        match=r"model URI 'models:/main\.ml\.churn@champion': no registered model named 'main\.ml\.churn' in "
              r"registry 'sqlite:///.*mlflow\.db'\..*Unity Catalog names are <catalog>\.<schema>\.<model>: set "
              r"mlflow\.registry_uri: databricks-uc",
    ):
        load_model("models:/main.ml.churn@champion")


# ---------------------------------------------------------------------------
# errors: unreachable registry, corrupt artifacts
# ---------------------------------------------------------------------------

@pytest.fixture()
def unreachable_registry(registry, monkeypatch):
    """Point MLflow at a closed port for one test (no retries), then restore."""
    bad = "http://127.0.0.1:9"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bad)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", bad)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow.set_tracking_uri(bad)
    mlflow.set_registry_uri(bad)
    try:
        yield bad
    finally:
        mlflow.set_tracking_uri(registry.tracking_uri)
        mlflow.set_registry_uri(registry.tracking_uri)


@pytest.mark.parametrize("uri", ["models:/demo_churn@champion", "models:/demo_churn/1", "models:/demo_churn/latest"])
def test_unreachable_registry(unreachable_registry, uri):
    start = time.monotonic()
    with pytest.raises(
        RegistryUnavailableError,
        match=rf"^could not reach the MLflow registry at 'http://127\.0\.0\.1:9' to resolve '{uri}'.*"
        r"Fix: check the job config's mlflow\.tracking_uri / mlflow\.registry_uri \(or MLFLOW_TRACKING_URI / "
        r"MLFLOW_REGISTRY_URI\)",
    ) as info:
        load_model(uri)
    assert isinstance(info.value, ModelResolutionError) and isinstance(info.value, ScoringError)
    assert "no registered model" not in str(info.value)  # not mistaken for a missing model
    assert time.monotonic() - start < 60


def test_unreachable_tracking_server_for_runs_uri(unreachable_registry):
    with pytest.raises(
        RegistryUnavailableError,
        match=r"^could not reach the MLflow tracking server at 'http://127\.0\.0\.1:9' to download "
        r"'runs:/0123456789abcdef0123456789abcdef/model'",
    ):
        load_model("runs:/0123456789abcdef0123456789abcdef/model")


def test_registry_is_back_after_the_unreachable_tests(registry):
    assert mlflow.get_registry_uri() == registry.tracking_uri
    assert load_model("models:/demo_price/1").version == "1"


@pytest.mark.parametrize(
    ("uri", "model_file"),
    [("models:/demo_price/1", "model.skops"), ("models:/demo_churn/1", "data/model.pth"),
     ("models:/demo_segments/1", "python_model.pkl")],
)
def test_corrupt_model_file_fails_at_load(tmp_path, uri, model_file):
    folder = tmp_path / "corrupt"
    shutil.copytree(load_model(uri).local_path, folder)
    target = folder / model_file
    assert target.is_file()
    target.write_bytes(b"\x80\x04this is not a model" * 10)
    # the artifacts are readable: only loading the model itself can find the damage
    unchecked = load_model(str(folder), validate=False)
    assert unchecked.uri == str(folder)
    with pytest.raises(
        ModelLoadError,
        match=rf"^model '{folder}' \(resolved from '{folder}'; [a-z0-9, ()]+\) could not be loaded from its artifacts: "
        r"\w+: .*Fix: re-log the model; the artifacts look corrupt",
    ):
        load_model(str(folder))


def test_corrupt_mlmodel_file(tmp_path):
    folder = tmp_path / "bad_mlmodel"
    shutil.copytree(load_model("models:/demo_price/1").local_path, folder)
    (folder / "MLmodel").write_text("flavors: [unclosed\n  : : :\n")
    with pytest.raises(ModelLoadError, match=r"its MLmodel file is missing or unreadable"):
        load_model(str(folder))


def test_missing_model_file(tmp_path):
    folder = tmp_path / "no_pickle"
    shutil.copytree(load_model("models:/demo_price/1").local_path, folder)
    (folder / "model.skops").unlink()
    with pytest.raises(ModelLoadError, match=r"could not be loaded from its artifacts"):
        load_model(str(folder))
