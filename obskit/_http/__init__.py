"""The framework-neutral HTTP server request: semantic conventions, RED metrics, the access line."""
