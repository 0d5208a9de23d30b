"""The HTTP service: FastAPI app, settings, job store and middleware (``saerad serve``).

Import :func:`saerad.service.app.create_app` directly; this package module stays import-light.
"""
