"""What Python workers import: the scoring core, with no Spark and no driver code.

Runs on: executors (and anywhere: it is tested without a JVM, and runs on a
GPU machine without Java). Modules, in the order a task uses them:

- :mod:`.task`: the one task entry point (UDF and direct scan): device, model, predictor;
- :mod:`.artifacts`, :mod:`.model_cache`, :mod:`.loading`: the model, unpacked and
  loaded once per worker, for every format MLflow 3 writes;
- :mod:`.device`: the task's GPU (``CUDA_VISIBLE_DEVICES``-aware) or CPU;
- :mod:`.specs`, :mod:`.inputs`, :mod:`.badrows`: what the model takes, and the
  one bad-row rule;
- :mod:`.runners`, :mod:`.predictor`, :mod:`.outputs`: batches in, predictions out;
- :mod:`.profiles`: column summaries and bin counts of scored rows, for drift (ops.drift's tasks);
- :mod:`.faults`: reliability drills (off unless a test turns them on).
"""
