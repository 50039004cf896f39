import sys

from segnas.cli.main import main

sys.exit(main())
