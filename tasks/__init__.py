"""The Celery layer: the app (queues, routes, beat), one task per model type, the producer
API, the retry policy and job orchestration. Imports ``models``, ``providers``, ``conf``."""
