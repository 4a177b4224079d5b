"""HTTP routes, one router per resource: classify, tasks, backbone, health (+ metrics)."""

from . import backbone, classify, health, tasks

ROUTERS = (classify.router, tasks.router, backbone.router, health.router)
