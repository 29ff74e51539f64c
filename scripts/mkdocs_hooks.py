"""MkDocs hook: links from docs/ to code in the repository become links to the repository.

The pages link to source files as GitHub renders them (``[polling.py](../airflow_provider_prime/
triggers/polling.py)``), which is right when reading ``docs/`` in the repository but points outside
the built site. Such links are rewritten to ``<repo_url>/blob/main/<path>`` (``tree`` for folders).
A link to a file that does not exist fails the build, as a broken page link does under ``--strict``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

#: A Markdown link target that climbs out of the page's folder: ``](../x/y.py)`` or ``](../x#frag)``.
_OUTSIDE_LINK = re.compile(r"\]\((?P<path>(?:\.\./)+[^)\s#]*)(?P<fragment>#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    repo_url = str(config["repo_url"]).rstrip("/")
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = (docs_dir / page_dir / match["path"]).resolve()
        if target.is_relative_to(docs_dir):
            return match[0]  # a page or asset of the site: MkDocs checks it
        if not target.is_relative_to(root) or not target.exists():
            raise PluginError(f"{page.file.src_uri}: link to {match['path']} points to nothing in the repo")
        kind = "tree" if target.is_dir() else "blob"
        path = target.relative_to(root).as_posix()
        return f"]({repo_url}/{kind}/main/{path}{match['fragment'] or ''})"

    return _OUTSIDE_LINK.sub(rewrite, markdown)
