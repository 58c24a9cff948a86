"""The scoring engine on the driver: the vectorized UDF, ``score()``, the direct scan.

Runs on: the driver builds the Spark plans; the functions it ships run on
executors through :mod:`spark_scoring.executor.task`.
"""
