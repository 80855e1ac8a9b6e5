"""Integrations of ember with other systems; each is an optional extra (`ember.integrations.ray`:
`pip install "ember[ray]"`). Nothing here is imported by `import ember`."""
