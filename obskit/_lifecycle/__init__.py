"""The runtime's life: init()/shutdown(), the global provider, fork, SIGTERM, own errors."""
