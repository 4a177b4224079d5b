"""HTTP routes, one router per resource: classify, stream (WebSocket), tasks, explain (verbalizer view),
backbone, health (+ metrics), Open Inference Protocol (/v2), web (the page at /)."""

from . import backbone, classify, explain, health, oip, stream, tasks, web

ROUTERS = (classify.router, stream.router, tasks.router, explain.router, backbone.router, health.router,
           oip.router, web.router)
