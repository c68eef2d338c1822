import sys

from yagi_meter.cli import main

sys.exit(main())
