"""gunicorn configuration for the example app: obskit's hooks in one line.

gunicorn -c examples/gunicorn.conf.py --preload 'examples.flask_app:create_app()'

Every worker's metrics, merged: http://127.0.0.1:9464/metrics (a server process the
master starts; OBSKIT_METRICS_PORT and OBSKIT_METRICS_ADDR where gunicorn starts).
"""

from obskit.integrations.gunicorn import *  # noqa: F403 - the hooks are the point

bind = "127.0.0.1:8000"
workers = 4
graceful_timeout = 10
