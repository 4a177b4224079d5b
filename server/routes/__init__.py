"""HTTP routes, one router per resource: classify, tasks, explain (verbalizer view), backbone, health (+ metrics)."""

from . import backbone, classify, explain, health, tasks

ROUTERS = (classify.router, tasks.router, explain.router, backbone.router, health.router)
