"""The three pipeline stages. Each exposes ``run_<stage>(ctx: StageContext) -> StageOutput``.

Stages import no Kubernetes client: they run in worker pods without cluster credentials.
"""
