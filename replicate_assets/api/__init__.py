"""The search API for the shop's web app: a small JSON HTTP service on Starlette and uvicorn (app.py)."""
