"""Settings and static configuration: the bottom layer, imported by everything above it."""
