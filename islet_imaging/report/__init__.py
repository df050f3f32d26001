"""Reports of a study workspace: HTML pages (jinja2 templates), matplotlib figures, exports."""
