"""The response cache: exact (canonical request hash) and semantic (embedding similarity), per tenant."""
