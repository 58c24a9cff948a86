"""Operations on the driver: what watches a run and what is left for people to read.

- :mod:`.progress`: the plan, progress lines and the summary (a run observer);
- :mod:`.tracking`: the MLflow run, score summaries and drift (a run observer);
- :mod:`.drift`: PSI and the Spark aggregations behind it;
- :mod:`.report`: ``spark-scoring report``, plots and the HTML page.

The entry point (:mod:`spark_scoring.run`) injects the observers; the job layer
never imports this package.
"""
