"""The identity provider's tables and the stores and services on them (see idp/__init__.py)."""
