"""WSGI entry point for gunicorn: `gunicorn -c gunicorn.conf.py gateway.wsgi:app`."""

from gateway.app import create_app

app = create_app()
