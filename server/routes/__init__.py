"""HTTP routes, one router per resource: classify, tasks, explain (verbalizer view), backbone, health
(+ metrics), web (the page at /)."""

from . import backbone, classify, explain, health, tasks, web

ROUTERS = (classify.router, tasks.router, explain.router, backbone.router, health.router, web.router)
