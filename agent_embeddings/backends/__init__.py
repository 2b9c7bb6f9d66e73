"""Built-in backends, each registered as a default plugin (see ``plugins.DEFAULT_PLUGINS``)."""
