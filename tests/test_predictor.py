"""spark_scoring.executor: the executor-side core, exercised without Spark.

Real models from the real sqlite registry (``registry`` fixture), loaded the
way executors load them (``executor.loading.load_native`` on the downloaded artifacts),
compared with ``mlflow.pyfunc.load_model(uri).predict`` on the same rows.
This file must not import pyspark (the predictor runs on machines without it).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_scoring.demo import FEATURES
from spark_scoring.errors import BadRowsError, ResultTypeError
from spark_scoring.engine.binding import plan_binding
from spark_scoring.executor.inputs import Binding
from spark_scoring.executor.loading import load_native
from spark_scoring.executor.outputs import to_arrow
from spark_scoring.executor.predictor import Predictor, rebatch, to_matrix
from spark_scoring.executor.runners import PyfuncRunner, SklearnRunner, TorchRunner
from spark_scoring.executor.specs import InputSpec, ModelInput, OutputSpec
from spark_scoring.model.registry import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
URIS = {
    "churn": "models:/demo_churn@champion",
    "fraud": "models:/demo_fraud/1",
    "price": "models:/demo_price/1",
    "segments": "models:/demo_segments@champion",
}
SEGMENT_FEATURES = ("tenure_months", "support_calls")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def feature_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))


def columns_of(frame: pd.DataFrame, names) -> list[pa.Array]:
    return [pa.array(frame[n].to_numpy(), type=pa.float64()) for n in names]


def split(columns: list[pa.Array], sizes) -> list[list[pa.Array]]:
    """Cut columns into uneven batches (like Spark's Arrow batches)."""
    out, start = [], 0
    for size in sizes:
        out.append([c.slice(start, size) for c in columns])
        start += size
    assert start == len(columns[0]), "split sizes must cover every row"
    return out


def reference(key: str, frame: pd.DataFrame):
    """What ``mlflow.pyfunc`` predicts on the same rows (numpy, or a frame for structs)."""
    model = mlflow.pyfunc.load_model(URIS[key])
    if key == "churn":  # signature says float32: pyfunc refuses float64 input
        return np.asarray(model.predict(frame.astype(np.float32))).reshape(-1)
    if key == "segments":
        return model.predict(frame[list(SEGMENT_FEATURES)])
    return np.asarray(model.predict(frame))


@pytest.fixture(scope="module")
def scoring_models(registry):
    return {key: load_model(uri) for key, uri in URIS.items()}


def stacked(names, dtype=np.float32) -> Binding:
    """Scalar feature columns stacked into one float matrix (a native torch / scikit-learn model)."""
    inp = ModelInput("x", pa.from_numpy_dtype(np.dtype(dtype)), (len(names),))
    return Binding(InputSpec((inp,), form="tensor"), tuple(names), stacked=True)


def make_predictor(scoring_models, key: str, **kw) -> Predictor:
    """Build the predictor the way an executor does for ``key``'s model (the engine's binding)."""
    m = scoring_models[key]
    plan = plan_binding(m, feature_names(key))
    if key == "churn":
        assert m.flavor == plan.runner == "pytorch"
        runner = TorchRunner(load_native("pytorch", m.local_path, "cpu"), "cpu")
    elif key in ("fraud", "price"):
        assert m.flavor == plan.runner == "sklearn"
        runner = SklearnRunner(load_native("sklearn", m.local_path), m.predict_method)
    else:
        assert m.flavor == plan.runner == "pyfunc"
        runner = PyfuncRunner(load_native("pyfunc", m.local_path), input_kind=plan.input_kind)
    return Predictor(runner, binding=plan.binding, output=m.output, **kw)


def feature_names(key: str):
    return SEGMENT_FEATURES if key == "segments" else FEATURES


def assert_matches_reference(key: str, result: pa.Array, expected, rows=None):
    """``result`` (Arrow) equals the pyfunc reference to 1e-6 at ``rows`` (default: all)."""
    rows = np.arange(len(result)) if rows is None else np.asarray(rows)
    if key == "segments":
        got = result.to_pylist()
        want = expected.reset_index(drop=True)
        for out_i, ref_i in zip(rows, range(len(want))):
            assert got[out_i]["score"] == pytest.approx(want["score"][ref_i], abs=1e-6)
            assert got[out_i]["segment"] == want["segment"][ref_i]
    elif key == "fraud":
        got = np.array([result[int(i)].as_py() for i in rows])
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    else:
        got = np.array([result[int(i)].as_py() for i in rows], dtype=np.float64)
        np.testing.assert_allclose(got, np.asarray(expected).reshape(-1), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------
# rebatch / to_matrix
# ---------------------------------------------------------------------------

def test_rebatch_gives_exact_batches_across_uneven_inputs():
    ids = pa.array(np.arange(26, dtype=np.int64))
    names = pa.array([f"r{i}" for i in range(26)])
    inputs = split([ids, names], [3, 10, 0, 1, 7, 5])
    out = list(rebatch(inputs, 4))
    assert [len(b[0]) for b in out] == [4, 4, 4, 4, 4, 4, 2]
    assert all(len(b) == 2 and len(b[0]) == len(b[1]) for b in out)
    assert pa.concat_arrays([b[0] for b in out]).to_pylist() == list(range(26))
    assert pa.concat_arrays([b[1] for b in out]).to_pylist() == [f"r{i}" for i in range(26)]


def test_rebatch_accepts_record_batches_and_bare_arrays():
    batches = [
        pa.record_batch({"x": pa.array([1.0, 2.0, 3.0])}),
        pa.record_batch({"x": pa.array([4.0])}),
        pa.record_batch({"x": pa.array([5.0, 6.0, 7.0, 8.0, 9.0])}),
    ]
    out = list(rebatch(batches, 2))
    assert [len(b[0]) for b in out] == [2, 2, 2, 2, 1]
    assert pa.concat_arrays([b[0] for b in out]).to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    single = list(rebatch([pa.array([1, 2, 3]), pa.array([4, 5])], 10))
    assert [b[0].to_pylist() for b in single] == [[1, 2, 3, 4, 5]]


def test_rebatch_refuses_non_positive_batch_size():
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        list(rebatch([pa.array([1])], 0))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=0, max_size=8),
    batch_size=st.integers(min_value=1, max_value=50),
)
def test_rebatch_property(sizes, batch_size):
    total = sum(sizes)
    col = pa.array(np.arange(total, dtype=np.int64))
    out = list(rebatch(split([col], sizes), batch_size))
    lengths = [len(b[0]) for b in out]
    assert sum(lengths) == total
    assert all(n == batch_size for n in lengths[:-1])
    if lengths:
        assert 0 < lengths[-1] <= batch_size
    got = pa.concat_arrays([b[0] for b in out]).to_pylist() if out else []
    assert got == list(range(total))


def test_to_matrix_shape_dtype_values():
    cols = [
        pa.array([1, 2, 3], type=pa.int64()),
        pa.array([0.5, None, 2.5], type=pa.float64()),
        pa.array([-1.0, 0.0, 1e3], type=pa.float32()),
    ]
    m = to_matrix(cols, np.float32)
    assert m.shape == (3, 3)
    assert m.dtype == np.float32
    assert m.flags["C_CONTIGUOUS"]
    expected = np.array([[1, 0.5, -1], [2, np.nan, 0], [3, 2.5, 1e3]], dtype=np.float32)
    np.testing.assert_array_equal(m, expected)  # NaN == NaN here: nulls became NaN
    m64 = to_matrix(cols[:1], np.float64)
    assert m64.shape == (3, 1) and m64.dtype == np.float64
    assert to_matrix([pa.array([], type=pa.float64())] * 2, np.float32).shape == (0, 2)


# ---------------------------------------------------------------------------
# real models: predictions equal mlflow.pyfunc's
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["churn", "fraud", "price", "segments"])
def test_predictor_matches_pyfunc(scoring_models, key):
    frame = feature_frame(300, seed=1)
    predictor = make_predictor(scoring_models, key, batch_size=64)
    batches = split(columns_of(frame, feature_names(key)), [100, 7, 0, 150, 43])
    parts = list(predictor.predict_stream(batches))
    assert [len(p) for p in parts] == [64, 64, 64, 64, 44]
    result = pa.concat_arrays(parts)
    assert result.type == scoring_models[key].output.arrow_type
    assert result.null_count == 0
    assert_matches_reference(key, result, reference(key, frame))
    assert predictor.rows_scored == 300 and predictor.rows_null == 0 and predictor.batches == 5


def test_output_types_per_model(scoring_models):
    assert scoring_models["churn"].output == OutputSpec("scalar", pa.float64())
    assert scoring_models["price"].output == OutputSpec("scalar", pa.float64())
    assert scoring_models["fraud"].output == OutputSpec("array", pa.list_(pa.float64()))
    assert scoring_models["segments"].output.arrow_type == pa.struct(
        [("score", pa.float64()), ("segment", pa.string())]
    )


# ---------------------------------------------------------------------------
# bad rows
# ---------------------------------------------------------------------------

def frame_with_bad_rows(n: int = 20) -> tuple[list[pa.Array], pd.DataFrame, list[int]]:
    """Columns with a null (row 3), a NaN (row 5) and a +inf (row 11); the clean frame."""
    frame = feature_frame(n, seed=2)
    cols = columns_of(frame, FEATURES)
    t = frame["tenure_months"].tolist()
    t[3] = None
    t[5] = float("nan")
    cols[0] = pa.array(t, type=pa.float64(), from_pandas=False)
    s = frame["support_calls"].to_numpy().copy()
    s[11] = np.inf
    cols[2] = pa.array(s)
    return cols, frame, [3, 5, 11]


@pytest.mark.parametrize("key", ["churn", "price", "segments"])
def test_on_null_error_names_columns_and_counts(scoring_models, key):
    cols, _frame, _bad = frame_with_bad_rows()
    if key == "segments":
        cols = [cols[0], cols[2]]
    predictor = make_predictor(scoring_models, key, on_null="error")
    assert cols[0].null_count == 1  # a true null, not only NaN
    with pytest.raises(
        BadRowsError,
        match=r"^3 of 20 rows have null, NaN or infinite features \(tenure_months: 2, support_calls: 1\)",
    ):
        predictor.predict(cols)


@pytest.mark.parametrize("key", ["churn", "fraud", "price", "segments"])
def test_on_null_null_prediction_nulls_exactly_the_bad_rows(scoring_models, key):
    cols, frame, bad = frame_with_bad_rows()
    if key == "segments":
        cols = [cols[0], cols[2]]
    predictor = make_predictor(scoring_models, key, on_null="null_prediction", batch_size=8)
    result = predictor.predict(cols)
    assert len(result) == 20
    assert [i for i in range(20) if not result[i].is_valid] == bad
    good = [i for i in range(20) if i not in bad]
    assert_matches_reference(key, result, reference(key, frame.iloc[good]), rows=good)
    assert predictor.rows_null == 3 and predictor.rows_scored == 17


def test_all_rows_bad_give_all_nulls(scoring_models):
    cols = [pa.array([None, float("nan")], type=pa.float64()) for _ in FEATURES]
    result = make_predictor(scoring_models, "churn", on_null="null_prediction").predict(cols)
    assert result.type == pa.float64()
    assert result.to_pylist() == [None, None]


@pytest.mark.parametrize("key", ["churn", "fraud", "segments"])
def test_empty_input(scoring_models, key):
    predictor = make_predictor(scoring_models, key)
    empty = [pa.array([], type=pa.float64()) for _ in feature_names(key)]
    result = predictor.predict(empty)
    assert len(result) == 0
    assert result.type == scoring_models[key].output.arrow_type
    assert list(predictor.predict_stream([])) == []
    assert list(predictor.predict_stream([empty, empty])) == []
    assert predictor.batches == 0


# ---------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------

class NanWhereFirstFeatureHigh(torch.nn.Module):
    """A real torch model that returns NaN for rows whose first feature is > 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return torch.where(x[:, :1] > 1.0, torch.full_like(out, float("nan")), out)


def test_nan_model_outputs_become_null(scoring_models):
    frame = feature_frame(50, seed=3)
    inner = load_native("pytorch", scoring_models["churn"].local_path, "cpu")
    predictor = Predictor(
        TorchRunner(NanWhereFirstFeatureHigh(inner)), binding=stacked(FEATURES), output=scoring_models["churn"].output
    )
    result = predictor.predict(columns_of(frame, FEATURES))
    high = np.flatnonzero(frame["tenure_months"].to_numpy() > 1.0)
    assert len(high) > 0
    assert [i for i in range(50) if not result[i].is_valid] == high.tolist()
    ok = [i for i in range(50) if i not in set(high)]
    assert_matches_reference("churn", result, reference("churn", frame.iloc[ok]), rows=ok)


def test_to_arrow_nan_to_null_scalar_and_array():
    scalar = to_arrow(np.array([0.25, np.nan, 1.0]), OutputSpec("scalar", pa.float64()), 3)
    assert scalar.to_pylist() == [0.25, None, 1.0]
    arr = to_arrow(
        np.array([[0.1, 0.9], [np.nan, 0.5]]), OutputSpec("array", pa.list_(pa.float64())), 2
    )
    assert arr.type == pa.list_(pa.float64())
    assert arr.to_pylist() == [[0.1, 0.9], [None, 0.5]]
    series = to_arrow(pd.Series([np.nan, 2.0]), OutputSpec("scalar", pa.float64()), 2)
    assert series.to_pylist() == [None, 2.0]


def test_to_arrow_refuses_two_columns_for_a_scalar():
    spec = OutputSpec("scalar", pa.float64())
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ResultTypeError, match=r"shape \(2, 2\).*never silently picks the first column"):
        to_arrow(probs, spec, 2)
    with pytest.raises(ResultTypeError, match=r"returned 2 columns \['p0', 'p1'\].*never silently picks"):
        to_arrow(pd.DataFrame(probs, columns=["p0", "p1"]), spec, 2)


def test_to_arrow_unwraps_one_element_rows_and_refuses_longer_ones():
    """A list of one-element arrays per row (what MLflow's preserve-output-type test returns) is one
    value per row; a row of two values for a scalar result is refused, never cut to its first."""
    for dtype, value, arrow_type in ((np.int32, 1, pa.int32()), (np.float32, 1.0, pa.float32()),
                                     (np.bool_, True, pa.bool_()), (np.str_, "string", pa.string())):
        out = to_arrow([np.array([dtype(value)], dtype=dtype)] * 3, OutputSpec("scalar", arrow_type), 3)
        assert out.type == arrow_type and out.to_pylist() == [value] * 3
    assert to_arrow([[0.5], None], OutputSpec("scalar", pa.float64()), 2).to_pylist() == [0.5, None]
    with pytest.raises(ResultTypeError, match=r"2 values per row.*never silently picks"):
        to_arrow([np.array([0.9, 0.1])] * 2, OutputSpec("scalar", pa.float64()), 2)


def test_an_array_result_over_mixed_columns_takes_the_columns_of_its_element_type():
    """spark_udf's rule for array<T> over a multi-column frame: the columns of T's dtype, strings
    from every column; none fits: an error naming the dtypes. A pandas Index per row is a list."""
    frame = pd.DataFrame({"0": ["class1"] * 2, "1": np.array([1, 1], dtype=np.int32), "2": [1.5, 1.5],
                          "3": [True, True]})
    expected = {pa.float32(): [1.0, 1.5], pa.float64(): [1.0, 1.5], pa.int32(): [1], pa.int64(): [1],
                pa.bool_(): [True], pa.string(): ["class1", "1", "1.5", "True"]}
    for element, row in expected.items():
        out = to_arrow(frame, OutputSpec("array", pa.list_(element)), 2)
        assert out.to_pylist() == [row, row], element
    with pytest.raises(ResultTypeError, match=r"none of which fits an array of bool"):
        to_arrow(frame[["0", "2"]], OutputSpec("array", pa.list_(pa.bool_())), 2)
    index = to_arrow([pd.Index(["a", "b"])] * 2, OutputSpec("array", pa.list_(pa.string())), 2)
    assert index.to_pylist() == [["a", "b"], ["a", "b"]]


def test_scalar_spec_on_predict_proba_model_is_refused(scoring_models):
    """A real classifier's predict_proba through a scalar spec: an error, not P(class 0)."""
    m = scoring_models["fraud"]
    runner = SklearnRunner(load_native("sklearn", m.local_path), "predict_proba")
    predictor = Predictor(runner, binding=stacked(FEATURES, np.float64), output=OutputSpec("scalar", pa.float64()))
    with pytest.raises(ResultTypeError, match=r"returned shape \(5, 2\)"):
        predictor.predict(columns_of(feature_frame(5), FEATURES))


def test_string_outputs_keep_none_as_null():
    spec = OutputSpec("scalar", pa.string())
    for raw in (pd.Series(["a", None, "b"]), np.array(["a", None, "b"], dtype=object), ["a", None, "b"]):
        out = to_arrow(raw, spec, 3)
        assert out.to_pylist() == ["a", None, "b"]
        assert out.null_count == 1
    struct = OutputSpec("struct", pa.struct([("score", pa.float64()), ("segment", pa.string())]))
    out = to_arrow(pd.DataFrame({"score": [0.5, np.nan], "segment": [None, "loyal"]}), struct, 2)
    assert out.to_pylist() == [{"score": 0.5, "segment": None}, {"score": None, "segment": "loyal"}]
    assert "None" not in [v for v in out.field("segment").to_pylist()]


def test_to_arrow_struct_needs_every_field():
    struct = OutputSpec("struct", pa.struct([("score", pa.float64()), ("segment", pa.string())]))
    with pytest.raises(ResultTypeError, match=r"\['segment'\] are missing"):
        to_arrow(pd.DataFrame({"score": [1.0]}), struct, 1)
    with pytest.raises(ResultTypeError, match=r"returned ndarray, but the output type is a struct"):
        to_arrow(np.array([1.0]), struct, 1)


def test_to_arrow_checks_row_count():
    with pytest.raises(ResultTypeError, match="returned 2 predictions for 3 rows"):
        to_arrow(np.array([1.0, 2.0]), OutputSpec("scalar", pa.float64()), 3)


# ---------------------------------------------------------------------------
# TorchRunner out-of-memory back-off
# ---------------------------------------------------------------------------

class OomAbove(torch.nn.Module):
    """A real torch model that raises CUDA OOM for batches of more than ``limit`` rows."""

    def __init__(self, inner, limit: int):
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated, {x.shape[0]} rows)")
        return self.inner(x)


def test_torch_oom_backoff_halves_until_it_fits(scoring_models):
    frame = feature_frame(300, seed=4)
    inner = load_native("pytorch", scoring_models["churn"].local_path, "cpu")
    module = OomAbove(inner, limit=40)
    runner = TorchRunner(module, "cpu")
    predictor = Predictor(runner, binding=stacked(FEATURES), output=scoring_models["churn"].output, batch_size=256)
    result = predictor.predict(columns_of(frame, FEATURES))
    assert len(result) == 300 and result.null_count == 0
    assert_matches_reference("churn", result, reference("churn", frame))
    assert runner.batch_size_used is not None and runner.batch_size_used <= 40
    assert runner.max_rows is not None and runner.max_rows <= 40
    assert max(module.seen) == 256  # it did try the full batch first
    # after the back-off, later batches start at the size that worked
    module.seen.clear()
    predictor.predict(columns_of(frame.iloc[:100], FEATURES))
    assert max(module.seen) <= 40


def test_torch_oom_at_one_row_is_raised(scoring_models):
    inner = load_native("pytorch", scoring_models["churn"].local_path, "cpu")
    runner = TorchRunner(OomAbove(inner, limit=0), "cpu")
    predictor = Predictor(runner, binding=stacked(FEATURES), output=scoring_models["churn"].output)
    with pytest.raises(torch.cuda.OutOfMemoryError, match=r"simulated, 1 rows"):
        predictor.predict(columns_of(feature_frame(8), FEATURES))


# ---------------------------------------------------------------------------
# prefetch
# ---------------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("key", ["churn", "fraud", "segments"])
def test_prefetch_and_plain_paths_agree(scoring_models, key):
    frame = feature_frame(500, seed=5)
    sizes = [37, 200, 1, 0, 150, 112]
    cols = columns_of(frame, feature_names(key))
    with_prefetch = make_predictor(scoring_models, key, batch_size=50, prefetch=True)
    plain = make_predictor(scoring_models, key, batch_size=50, prefetch=False)
    a = list(with_prefetch.predict_stream(split(cols, sizes)))
    b = list(plain.predict_stream(split(cols, sizes)))
    assert [len(x) for x in a] == [len(x) for x in b] == [50] * 10
    assert pa.concat_arrays(a).equals(pa.concat_arrays(b))


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "spark_scoring_prefetch" and t.is_alive()]


@pytest.mark.timeout(120)
def test_prefetch_thread_error_propagates(scoring_models):
    frame = feature_frame(120, seed=6)
    cols = columns_of(frame, FEATURES)
    values = frame["satisfaction"].to_numpy().copy()
    values[95] = np.nan  # in the fourth model batch of 30
    cols[-1] = pa.array(values)
    predictor = make_predictor(scoring_models, "churn", batch_size=30, prefetch=True, on_null="error")
    got = []
    with pytest.raises(BadRowsError, match=r"1 of 30 rows .*\(satisfaction: 1\)"):
        for part in predictor.predict_stream(split(cols, [40, 40, 40])):
            got.append(part)
    assert len(got) <= 3  # the good batches before the bad one
    for t in _prefetch_threads():
        t.join(timeout=5)
    assert _prefetch_threads() == []


@pytest.mark.timeout(120)
def test_prefetch_upstream_error_propagates(scoring_models):
    frame = feature_frame(60, seed=7)
    cols = columns_of(frame, FEATURES)

    def batches():
        yield [c.slice(0, 30) for c in cols]
        yield [c.slice(30, 30) for c in cols]
        raise RuntimeError("upstream arrow stream broke")

    predictor = make_predictor(scoring_models, "churn", batch_size=30, prefetch=True)
    with pytest.raises(RuntimeError, match="upstream arrow stream broke"):
        list(predictor.predict_stream(batches()))


def test_predictor_argument_checks(scoring_models):
    with pytest.raises(ValueError, match=r"on_null='skip': expected 'error' or 'null_prediction'"):
        make_predictor(scoring_models, "price", on_null="skip")
    with pytest.raises(ValueError, match="batch_size must be positive, got -1"):
        make_predictor(scoring_models, "price", batch_size=-1)


# ---------------------------------------------------------------------------
# no Spark needed
# ---------------------------------------------------------------------------

def test_this_file_imports_no_spark():
    import ast

    with open(__file__, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "pyarrow" in imported  # the check sees this file's imports
    assert "py" + "spark" not in imported


def test_predictor_imports_without_pyspark():
    code = (
        "import sys\n"
        "import spark_scoring.executor.task, spark_scoring.executor.scan, spark_scoring.model.signature, "
        "spark_scoring.engine.binding\n"
        "bad = sorted(m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.'))\n"
        "assert 'pyspark' not in sys.modules, bad[:10]\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"
