"""speechprompt-server HTTP service (FastAPI): app factory in ``server.app``, entry point ``server.main.run``."""
