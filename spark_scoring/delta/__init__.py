"""Delta I/O on the driver: SQL quoting, table references, idempotent writes, the change feed.

- :mod:`.sql`: quoting (the security boundary for partition values and names);
- :mod:`.tables`: :class:`~.tables.TableRef` (path or catalog name), history, layout;
- :mod:`.writes`: one idempotent commit per partition, Delta conflicts retried;
- :mod:`.changes`: the Change Data Feed.
"""
