"""The kopf operator: handlers → reconcile → Job builders and the Kubernetes client."""
