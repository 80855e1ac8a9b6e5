"""`python -m ember.tools.conformance`: the same as `ember conformance`."""

import sys

from ember.tools.conformance.cli import main

sys.exit(main())
