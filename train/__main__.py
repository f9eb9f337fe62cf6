"""Entry point for ``python -m train`` and for ``paddle.distributed.launch ... train/__main__.py``."""
import sys
from pathlib import Path

if not __package__:  # run as a file by Paddle's launcher: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.cli import main  # noqa: E402

sys.exit(main())
