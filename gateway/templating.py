"""Every page and every inserted text is a jinja2 template in templates/."""

from __future__ import annotations

import functools
import time
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


# name -> (when it was last checked against its file, the template)
_CHECKED: dict[str, tuple[float, jinja2.Template]] = {}
RECHECK_SECONDS = 1.0


def template(name: str) -> jinja2.Template:
    """`get_template(name)`, its check of the file (a stat) made at most once a second: a
    template is rendered for every text and message, and an operator's edit shows within
    a second."""
    now = time.monotonic()
    checked = _CHECKED.get(name)
    if checked is not None and now - checked[0] < RECHECK_SECONDS:
        return checked[1]
    found = environment().get_template(name)
    _CHECKED[name] = (now, found)
    return found


def render(name: str, **context) -> str:
    return template(name).render(**context)
