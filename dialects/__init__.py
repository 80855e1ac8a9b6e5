"""ember's dialects (graph, kernel) and what they share.

Importing the package memoizes xDSL's verification of the upstream ops the loops IR is made
of (dialects/verification.py: same checks, same errors, each op signature checked once).
"""

from ember.dialects.verification import install as _install_verification

_install_verification()
