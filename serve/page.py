"""``GET /``: the drawing page (one self-contained HTML file, inline CSS and JS, no CDN)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("page", __name__)

PAGE = Path(__file__).with_name("templates") / "index.html"


@bp.get("/")
def index():
    """The page where a person draws a digit and sees the prediction live."""
    return Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8")
