import sys

from metaprompt.cli import main

sys.exit(main())
