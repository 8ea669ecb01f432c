"""OpenID Connect provider, in two sub-packages:

- `idp.core`: the protocol core (authorization, grants, tokens, client authentication, claims, levels of
  assurance, sessions, logout, WebAuthn ceremonies), framework- and database-free: plain records in, plain
  results out, storage behind the Protocols of `idp.core.interfaces`.
- `idp.sql`: the SQL side: the tables (`idp.sql.models`) and the stores and services that implement those
  Protocols on units of work or ORM sessions (OIDC and passkey stores, revocations, clients, persons,
  enrollment, back-channel logout delivery).

`idp.sql` imports `idp.core`, never the other way round (import-linter contracts in pyproject.toml).
"""
