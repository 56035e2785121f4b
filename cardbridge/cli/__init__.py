"""`flask …` command groups (SPEC "Command line"): thin wrappers over services.

Each command exits non-zero with a one-line reason on bad input. One module per group;
register() adds them all.
"""

from flask import Flask

from cardbridge.cli.campaigns import bounce_cli, campaign_cli, worker
from cardbridge.cli.imports import export, import_customers, import_mapping, report
from cardbridge.cli.links import demo, links_cli
from cardbridge.cli.payment_page import check_payment_page
from cardbridge.cli.purge import purge_command
from cardbridge.cli.staff import api_token_cli, staff_cli
from cardbridge.cli.stripe_sync import stripe_cli
from cardbridge.cli.subscriptions import prices_cli, subscriptions_cli


def register(app: Flask) -> None:

    app.cli.add_command(links_cli)
    app.cli.add_command(demo)

    for command in (import_customers, import_mapping, report, export):
        app.cli.add_command(command)

    app.cli.add_command(staff_cli)
    app.cli.add_command(api_token_cli)

    for command in (campaign_cli, worker, bounce_cli):
        app.cli.add_command(command)

    app.cli.add_command(check_payment_page)
    app.cli.add_command(prices_cli)
    app.cli.add_command(subscriptions_cli)
    app.cli.add_command(stripe_cli)
    app.cli.add_command(purge_command)
