import sys

from .apps.entry import main

sys.exit(main())
