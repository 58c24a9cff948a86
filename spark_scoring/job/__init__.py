"""Jobs on the driver: a Delta table scored partition by partition, idempotently.

- :mod:`.plan`: everything that can fail before compute, done once: a frozen plan;
- :mod:`.sources`: the units (the snapshot's partitions, or the change feed's);
- :mod:`.stages`: recover, count, gate, quarantine, score, commit, reconcile;
- :mod:`.runner`: the one loop (audit rows, observers, failure accounting);
- :mod:`.audit`, :mod:`.quality`: the audit table, and the bad-row rule rendered for Spark;
- :mod:`.results`: what a run returns.

``spark_scoring.run_job`` (:mod:`spark_scoring.run`) wires the observers
(progress, tracking, drift) in; this package does not import them.
"""
