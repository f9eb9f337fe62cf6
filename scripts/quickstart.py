"""The whole path in one command: train both tasks quickly, export them, serve them.

    python -m scripts.quickstart            # ~3 minutes on 2 CPU cores, then serves on :8000
    python -m scripts.quickstart --no-serve # stop after exporting (prints the serve command)

Every step is the toolkit's own command line, printed before it runs, so you can repeat any of them.
Run it again and it reuses what is there (training resumes; export replaces the bundles).
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
RUNS, BUNDLES = Path("runs/quickstart"), Path("bundles")


def step(*args: str) -> None:
    """Run ``python -m <args>`` from the project root, echoing it first."""
    print(f"\n$ python -m {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True)


def sample_digit(path: Path) -> int:
    """Write one MNIST test digit as a dark-on-light PNG (as a person would draw it); return its label."""
    from common.datasets import read_mnist

    images, labels = read_mnist("test", limit=1)
    cv2.imwrite(str(path), 255 - cv2.resize(images[0], (140, 140)))
    return int(labels[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=1, help="MNIST epochs (1 is ~98.5%%, 8 is the full default)")
    parser.add_argument("--no-serve", action="store_true", help="stop after exporting")
    args = parser.parse_args()

    step("train", "mnist", "--epochs", str(args.epochs), "--output", str(RUNS / "mnist"), "--resume", "auto")
    step("train", "housing", "--output", str(RUNS / "housing"), "--resume", "auto")
    for task in ("mnist", "housing"):
        step("export", "--checkpoint", str(RUNS / task), "--out", str(BUNDLES / task), "--force")  # its best.pdckpt
    digit_png = RUNS / "digit.png"
    label = sample_digit(ROOT / digit_png)

    url = f"http://127.0.0.1:{args.port}"
    print(f"""
Bundles are in {BUNDLES}/. Serving them at {url}:
  open {url}/ in a browser and draw a digit.

Call the API from another terminal ({digit_png} is a {label}):
  curl -F file=@{digit_png} {url}/predict/digit
  curl -H 'Content-Type: image/png' --data-binary @{digit_png} {url}/predict/digit
  curl -H 'Content-Type: application/json' -d '[0.00632, 18, 2.31, 0, 0.538, 6.575, 65.2, 4.09, 1, 296, 15.3, 396.9, 4.98]' {url}/predict/house
  curl -H 'Content-Type: application/json' -d '{{"RM": 6.575, "LSTAT": 4.98, "CRIM": 0.00632, "ZN": 18, "INDUS": 2.31, "CHAS": 0, "NOX": 0.538, "AGE": 65.2, "DIS": 4.09, "RAD": 1, "TAX": 296, "PTRATIO": 15.3, "B": 396.9}}' {url}/predict/house
  curl {url}/v2/health/ready
  curl {url}/v2/models/mnist
  curl -H 'Content-Type: application/json' -d '{{"inputs": [{{"name": "features", "shape": [1, 13], "datatype": "FP32", "data": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}}]}}' {url}/v2/models/housing/infer
      (V2 takes the model's own input: features already normalised, as Triton would; all zeros = an average house)
  curl {url}/metrics
  curl {url}/openapi.json
(docs/SERVING.md has every endpoint, the production server's limits, containers and Kubernetes.)
""", flush=True)
    serve = ["serve", "--models", str(BUNDLES), "--port", str(args.port)]
    if args.no_serve:
        print(f"--no-serve: start it with  python -m {shlex.join(serve)}")
        return
    step(*serve)


if __name__ == "__main__":
    main()
