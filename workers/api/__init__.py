"""The HTTP API (``modelyard api``): OpenAI-compatible ``/v1`` (files, batches, embeddings) and
native ``/api`` endpoints (jobs of every type, model management, usage, tenants). An interface
like the CLI: both call the same functions in ``tasks`` and ``models``."""
