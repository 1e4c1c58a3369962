"""Persistence: tables and stores, migrations, key encryption, and the LLMBundle
(a tenant's resolved model). Imports ``providers`` and ``conf``; never ``tasks``."""
