"""Model resolution on the driver: URIs, the registry, signatures, shipping.

Runs on: the driver. :mod:`.uri` parses every URI MLflow hands out,
:mod:`.registry` pins it to one version and downloads it once,
:mod:`.signature` reads what the model takes and returns, :mod:`.shipping`
makes the artifacts reachable from executors.
"""
