"""anatomy_jax: how deep networks acquire visual patterns and what they end up representing."""

__version__ = "0.1.0"
