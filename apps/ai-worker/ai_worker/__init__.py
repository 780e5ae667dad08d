"""Traffic Dam AI worker: answers questions from a Redis Stream, token by token."""

__version__ = "0.1.0"
