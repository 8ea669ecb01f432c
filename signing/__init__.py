"""PAdES signing and validation on pyHanko (built by later issues)."""

__all__: list[str] = []
