"""The signing core: PAdES levels and signatures, the input policy, approvals; no web framework, no database."""

__all__: list[str] = []
