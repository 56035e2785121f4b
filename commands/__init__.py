"""`flask …` command groups (SPEC "Command line"): thin wrappers over services.

Each command exits non-zero with a one-line reason on bad input. One module per group;
register() adds them all.
"""

from flask import Flask


def register(app: Flask) -> None:
    from commands.links import demo, links_cli

    app.cli.add_command(links_cli)
    app.cli.add_command(demo)
