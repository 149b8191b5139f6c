"""Renderers that turn a report into terminal output, Markdown and files; they compute nothing."""
