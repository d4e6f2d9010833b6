"""Templates are operator-editable: an edited template is used within a second, without a
stat of its file for every message rendered."""

import os
from types import SimpleNamespace

import jinja2

from gateway import templating


def test_an_edited_template_is_used_after_the_recheck_interval(tmp_path, monkeypatch):
    page = tmp_path / "line.txt.j2"
    page.write_text("one")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(tmp_path)), autoescape=True)
    clock = [1000.0]
    monkeypatch.setattr(templating, "environment", lambda: env)
    monkeypatch.setattr(templating, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(templating, "_CHECKED", {})

    assert templating.render("line.txt.j2") == "one"
    page.write_text("two")
    stat = page.stat()
    os.utime(page, (stat.st_atime + 5, stat.st_mtime + 5))  # a visibly newer file

    clock[0] += 0.5
    assert templating.render("line.txt.j2") == "one"  # not looked at again yet
    clock[0] += templating.RECHECK_SECONDS
    assert templating.render("line.txt.j2") == "two"
