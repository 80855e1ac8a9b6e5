"""What every compiler stage shares and nothing else defines: the compilation target
(`target.py`) and the limits that keep compile cost independent of tensor values
(`limits.py`). Imports only `ember.runtime`."""
