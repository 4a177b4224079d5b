"""HTTP routes, one router per resource: classify, stream (WebSocket), tasks, backbone, health (+ metrics)."""

from . import backbone, classify, health, stream, tasks

ROUTERS = (classify.router, stream.router, tasks.router, backbone.router, health.router)
