"""`python -m cloudmirror.cli ...` runs the command line, like the `cloudmirror` script."""

from cloudmirror.cli import main

main()
