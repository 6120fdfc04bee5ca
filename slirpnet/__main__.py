import sys

from slirpnet.cli import main

sys.exit(main())
