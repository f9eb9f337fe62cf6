"""Entry point for ``python -m train`` and for ``paddle.distributed.launch ... train/__main__.py``.

Run as a file by the launcher, it imports ``train`` from the installed package (``pip install -e .``).
"""
import sys

from train.cli import main

sys.exit(main())
