"""`python -m slsfs` is the `sls` command."""
import sys

from slsfs.cli import main

sys.exit(main())
