"""PAdES signing and validation on pyHanko: signing requests, approval, durable jobs, their tables.

`signing.core` knows no FastAPI and no database (PAdES levels, input policy, the pyHanko engine, Protocols of its
stores, errors carrying their wire form); `signing.sql` holds its tables and the stores on Core statements.
"""

__all__: list[str] = []
