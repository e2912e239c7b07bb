"""`spaceport operator`: builds the reconciler and runs kopf."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from spaceport.controller.handlers import LoginFn, register
from spaceport.controller.k8s import Kube
from spaceport.controller.reconcile import Reconciler
from spaceport.controller.settings import OperatorSettings, SettingsError

log = logging.getLogger("spaceport.operator")


def build_registry(kube: Kube, settings: OperatorSettings, login: LoginFn | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    register(registry, Reconciler(kube, settings), settings, login=login)
    return registry


def _cluster_client() -> Kube:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = 32
    return Kube(client.ApiClient(configuration))


def _login_via_client(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)


def run_operator(namespaces: list[str], all_namespaces: bool, standalone: bool, priority: int | None,
                 peering: str) -> int:
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as e:
        log.error("%s", e)
        return 64
    if not namespaces and not all_namespaces and settings.namespace:
        namespaces = [settings.namespace]
    clusterwide = all_namespaces or not namespaces
    if settings.metrics_port:
        import prometheus_client

        prometheus_client.start_http_server(settings.metrics_port)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # kopf logs "Handler ... succeeded" for every watch event (85% of the log under load); failures are
        # warnings and errors, which stay. With -v everything shows.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = build_registry(_cluster_client(), settings, login=_login_via_client)
    asyncio.run(kopf.operator(
        registry=registry,
        clusterwide=clusterwide,
        namespaces=[] if clusterwide else namespaces,
        standalone=standalone,
        priority=priority or 0,
        # kopf makes a named peering mandatory even with standalone=True: name it only when peering.
        peering_name=None if standalone else peering,
        liveness_endpoint=settings.health_endpoint,
    ))
    return 0
