import sys

from ci_pipeline.cli import main

sys.exit(main())
