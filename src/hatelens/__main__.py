import sys

from hatelens.cli import main

sys.exit(main())
