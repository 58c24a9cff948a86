"""spark_scoring: batch inference of MLflow models on Apache Spark, Delta in and out."""
from setuptools import find_packages, setup

# Versions that were installed and tested together (see README "Versions").
# delta-spark 4.4.x accepts pyspark 4.0.1-4.2.0 (4.4.0: 4.4.1 has no jars on Maven Central);
# PySpark warns on pandas 3.
INSTALL_REQUIRES = [
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "mlflow==3.17.2",
    "torch==2.13.0",
    "pandas>=2.2,<3",
    "pyarrow>=18,<26",
    "numpy>=1.26,<2.5",
    "scikit-learn>=1.5,<1.10",
    "pyyaml>=6.0,<7",
    "pydantic>=2.7,<3",
    "rich>=13,<16",
    "matplotlib>=3.8,<3.12",
    # Spark Connect clients (SPARK_REMOTE=sc://...): the pyspark[connect] extra's packages
    "grpcio>=1.76.0",
    "grpcio-status>=1.76.0",
    "googleapis-common-protos>=1.71.0",
    "zstandard>=0.25.0",
    # the direct scan plans a pinned Delta version's files through delta-kernel (delta-rs)
    "deltalake==1.6.6",
    # media models (image tagging): torchvision's decode_jpeg / resize, matched to torch 2.13
    "torchvision==0.28.0",
    "Jinja2>=3.1,<4",
]

TEST_REQUIRES = [
    "pytest>=8,<10",
    "pytest-timeout>=2.3,<3",
    # the suite runs in two worker processes (pytest.ini): it waits on JVMs, clusters and
    # subprocesses far more than it computes, so two share a 2-core machine well
    "pytest-xdist>=3.6,<4",
    "chispa==0.12.0",
    "hypothesis>=6.100,<7",
    # tests/test_packaging.py builds the wheel; tests/test_bundle.py loads the Databricks
    # Asset Bundle into the typed job classes of the version the CLI's schema is read from.
    "build>=1.2,<2",
    "databricks-bundles==1.22.1",
    # tests/test_layers.py: the package's layer contracts (.importlinter)
    "import-linter==2.17",
]

# Side-by-side peers for bench/media.py and bench/run.py (not needed to run or test the package).
BENCH_REQUIRES = ["ray[data]==2.60.0", "daft==0.7.26", "threadpoolctl>=3"]

# Non-Python files shipped inside the package (the report's Jinja2 templates); the
# patterns are relative to spark_scoring/, so they match templates/ folders at any depth.
PACKAGE_DATA = {"spark_scoring": ["**/templates/*.html", "**/templates/*.j2"]}

setup(
    name="spark_scoring",
    version="0.1.0",
    description="Batch inference of MLflow models on Spark: vectorized UDFs, CPU/GPU, "
    "partition-by-partition idempotent Delta jobs with lineage.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["spark_scoring", "spark_scoring.*"]),
    include_package_data=True,
    package_data=PACKAGE_DATA,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES + BENCH_REQUIRES, "bench": BENCH_REQUIRES},
    entry_points={"console_scripts": ["spark-scoring=spark_scoring.cli:entry"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
