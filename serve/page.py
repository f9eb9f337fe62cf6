"""``GET /``: the page for people (one self-contained HTML file, inline CSS and JS, no CDN)."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

bp = Blueprint("page", __name__)

PAGE = Path(__file__).with_name("templates") / "index.html"


@bp.get("/")
def index():
    """Draw or photograph a digit and see what the model saw; price a house."""
    return Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8")
