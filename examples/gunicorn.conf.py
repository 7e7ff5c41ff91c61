"""gunicorn configuration for the example app: obskit's hooks in one line.

gunicorn -c examples/gunicorn.conf.py --preload 'examples.flask_app:create_app()'
"""

from obskit.integrations.gunicorn import *  # noqa: F403 - the hooks are the point

bind = "127.0.0.1:8000"
workers = 4
graceful_timeout = 10
