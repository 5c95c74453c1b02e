import sys

try:  # importing torch, Pyro and Lightning takes seconds: a Ctrl-C then is one line too, not an import traceback
    from ppvae.cli import main
except KeyboardInterrupt:
    print("ppvae: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
