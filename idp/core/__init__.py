"""The OpenID Connect protocol core: no web framework, no database (see idp/__init__.py)."""
