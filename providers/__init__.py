"""The pure provider layer: model-type interfaces, the registry, the error classifier,
the shared HTTP client and one module per provider family. No Celery, no database."""
