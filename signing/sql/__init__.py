"""The SQL side of signing: tables and stores on compiled Core statements (storage.direct)."""

__all__: list[str] = []
