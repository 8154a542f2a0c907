"""`python -m review`: the same as `onboarding-review`."""

import sys

from review.cli import main

sys.exit(main())
