"""HTTP routes, one router per resource: classify, tasks, backbone, health (+ metrics), Open Inference Protocol."""

from . import backbone, classify, health, oip, tasks

ROUTERS = (classify.router, tasks.router, backbone.router, health.router, oip.router)
