"""Every page and every inserted text is a jinja2 template in templates/."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

_PACKAGE = Path(__file__).resolve().parent


def template_dirs() -> list[Path]:
    """templates/ of the checkout (operator-editable) first, else the copy in the wheel."""
    candidates = [_PACKAGE.parent / "templates", _PACKAGE / "templates"]
    return [p for p in candidates if p.is_dir()]


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """HTML templates are autoescaped; text templates (footers, texts) are not."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in template_dirs()]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2", "xml.j2"),
                                            default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
