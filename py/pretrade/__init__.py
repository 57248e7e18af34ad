"""pretrade: pre-trade risk limits as living variables."""

__version__ = "0.1.0"
