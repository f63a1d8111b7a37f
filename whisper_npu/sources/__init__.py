"""Where a language's clips come from: the protocol (base.py), the registry (registry.py), one module per source."""
