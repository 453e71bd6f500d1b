"""The ACME client in parts (after lego's acme/api): a session shared by the services,
over a transport (JWS, nonces, busy and skew handling); the account, orders with their
authorizations, renewal information, the CA's health (breaker, Retry-After), and the
translation of what the CA said into certagent's errors. The only package that imports
`acme` and `josepy`; `certagent.acme_issuer` is its facade."""
