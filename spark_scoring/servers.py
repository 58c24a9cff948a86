"""Which MLflow tracking server and model registry a run talks to, in one documented order.

Runs on: the driver (``run_job``, ``spark-scoring report``, the notebooks).

For each of the tracking URI and the registry URI, the first of:

1. the CLI flag (``--tracking-uri`` / ``--registry-uri``) or the argument a caller passes;
2. the job config's ``mlflow.tracking_uri`` / ``mlflow.registry_uri`` (a relative
   ``sqlite:///`` path there is relative to the config file's folder);
3. the environment: ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``;
4. MLflow's own default (the registry defaults to the tracking server).

:func:`use` applies the result to this process (``mlflow.set_tracking_uri`` /
``set_registry_uri``) and returns it, so every later call (the registry lookup,
the MLflow run, the report) uses the same servers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Servers", "resolve", "use"]


@dataclass(frozen=True)
class Servers:
    tracking_uri: str | None
    registry_uri: str | None
    source: str = ""  # where the tracking URI came from: flag, config, environment, mlflow default


def resolve(tracking_uri: str | None = None, registry_uri: str | None = None, config=None) -> Servers:
    """The servers by the precedence above (``config``: a JobConfig's ``mlflow`` section, or None)."""
    section = getattr(config, "mlflow", config)
    conf_tracking = getattr(section, "tracking_uri", None)
    conf_registry = getattr(section, "registry_uri", None)
    env_tracking = os.environ.get("MLFLOW_TRACKING_URI") or None
    env_registry = os.environ.get("MLFLOW_REGISTRY_URI") or None
    if tracking_uri:
        tracking, source = tracking_uri, "flag"
    elif conf_tracking:
        tracking, source = conf_tracking, "config"
    elif env_tracking:
        tracking, source = env_tracking, "environment"
    else:
        tracking, source = None, "mlflow default"
    registry = registry_uri or conf_registry or env_registry  # else MLflow's default: the tracking server
    return Servers(tracking, registry, source)


def use(servers: Servers) -> Servers:
    """Point this process's MLflow client at ``servers`` (None: leave MLflow's choice)."""
    import mlflow

    if servers.tracking_uri:
        mlflow.set_tracking_uri(servers.tracking_uri)
    if servers.registry_uri or servers.tracking_uri:
        mlflow.set_registry_uri(servers.registry_uri or servers.tracking_uri)
    return servers
