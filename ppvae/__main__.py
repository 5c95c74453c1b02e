import sys

from ppvae.cli import main

sys.exit(main())
