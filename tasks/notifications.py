"""Notifications: a webhook block and two Prefect automations that post a message when the gate blocks a candidate
(`ragops.gate.decided` with verdict `block`) and when a flow run fails or crashes.

The block is Prefect's Custom Webhook: it POSTs JSON `{"text": "<subject>\\n<body>"}`, what a Slack incoming webhook
(or any HTTP endpoint taking that JSON) accepts. The webhook URL is a secret (a Slack webhook URL is all it takes
to post to a channel): it is kept in the block's secret values only, and never returned, logged or printed.
Installing again updates the block and both automations in place.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tasks.errors import SettingsError
from tasks.events import GATE_DECIDED

BLOCK_NAME = "ragops-notify"
GATE_BLOCKED = "ragops: gate blocked"
FLOW_RUN_FAILED = "ragops: flow run failed"
AUTOMATION_NAMES = (GATE_BLOCKED, FLOW_RUN_FAILED)
FAILED_RUN_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")
SECRET_KEY = "webhook_url"  # the block's secret value its URL template names

# Jinja templates Prefect renders when an automation fires: `event` is the triggering event (its payload is the
# gate's, tasks/events.py); `flow` and `flow_run` are read from the API for the run a flow-run event is about.
GATE_SUBJECT = "ragops: the gate blocked version {{ event.payload.version }} of table {{ event.payload.table }}"
GATE_BODY = """\
{% set p = event.payload %}Table {{ p.table }}: candidate version {{ p.version }} was blocked; \
{% if p.production_version is not none %}production stays at version {{ p.production_version }}.\
{% else %}there is no production version yet.{% endif %}
Reason: {{ p.reason or "none given" }}
{% if p.primary_metric and p.value is number %}{{ p.primary_metric }}: {{ "%.4f"|format(p.value) }}\
{% if p.production_value is number %} (production {{ "%.4f"|format(p.production_value) }}){% endif %}\
{% if p.ci_low is number and p.ci_high is number %}; interval of the change \
[{{ "%+.4f"|format(p.ci_low) }}, {{ "%+.4f"|format(p.ci_high) }}]: {{ p.interval }}{% endif %}
{% endif %}Report: {{ p.report_url or "none (no report was published)" }}
{% if p.run_id %}Run: {{ p.run_id }}{% endif %}"""
FAILED_SUBJECT = "ragops: flow run {{ flow.name }}/{{ flow_run.name }} {{ flow_run.state.name }}"
FAILED_BODY = """\
{% set url = flow_run|ui_url %}\
Flow run {{ flow.name }}/{{ flow_run.name }} ended {{ flow_run.state.name }} at {{ flow_run.state.timestamp }}.
Message: {{ flow_run.state.message or "none" }}
Run: {{ url if url else "flow run id " ~ flow_run.id }}"""


def check_webhook_url(url: str) -> str:
    """The URL, stripped, if it is an http(s) URL with a host; else SettingsError (which never shows the URL)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            "the notification webhook URL must be an http:// or https:// URL with a host "
            "(for Slack: the Incoming Webhook URL, https://hooks.slack.com/services/...)"
        )
    return url


def webhook_block(webhook_url: str, name: str = BLOCK_NAME) -> Any:
    """A Custom Webhook block posting `{"text": subject + body}` to the URL, which it holds as a secret value."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.types import SecretDict

    return CustomWebhookNotificationBlock(
        name=name,
        url="{{" + SECRET_KEY + "}}",
        method="POST",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets=SecretDict({SECRET_KEY: check_webhook_url(webhook_url)}),
    )


def automations(block_id: Any) -> list[Any]:
    """The two automations (Prefect AutomationCore) that notify through the block `block_id`."""
    from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification

    gate = AutomationCore(
        name=GATE_BLOCKED,
        description="ragops: notify when the gate blocks a candidate version (ragops server notify).",
        tags=["ragops"],
        trigger=EventTrigger(
            expect={GATE_DECIDED},
            match={"prefect.resource.id": "ragops.table.*", "ragops.verdict": "block"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=GATE_SUBJECT, body=GATE_BODY)],
    )
    failed = AutomationCore(
        name=FLOW_RUN_FAILED,
        description="ragops: notify when a flow run fails or crashes (ragops server notify).",
        tags=["ragops"],
        trigger=EventTrigger(
            expect=set(FAILED_RUN_EVENTS),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_id, subject=FAILED_SUBJECT, body=FAILED_BODY)],
    )
    return [gate, failed]


def install_notifications(webhook_url: str, *, name: str = BLOCK_NAME) -> dict[str, Any]:
    """Create or update the webhook block `name` and the two automations; what they are (ids, names), never the URL."""
    from prefect.client.orchestration import get_client

    block = webhook_block(webhook_url, name)
    block_id = block.save(name, overwrite=True)
    installed = []
    with get_client(sync_client=True) as client:
        for automation in automations(block_id):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                automation_id = existing[0].id
                client.update_automation(automation_id, automation)
                for duplicate in existing[1:]:  # two installs that raced: keep one
                    client.delete_automation(duplicate.id)
            else:
                automation_id = client.create_automation(automation)
            installed.append(
                {
                    "name": automation.name,
                    "id": str(automation_id),
                    "created": not existing,
                    "expect": sorted(automation.trigger.expect),
                }
            )
    return {
        "block": {"name": name, "id": str(block_id), "type": block.get_block_type_slug()},
        "automations": installed,
    }


def remove_notifications(*, name: str = BLOCK_NAME) -> dict[str, Any]:
    """Delete the two automations and the webhook block `name`; what was removed (names and ids)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    removed: list[dict[str, str]] = []
    block: dict[str, str] | None = None
    with get_client(sync_client=True) as client:
        for automation_name in AUTOMATION_NAMES:
            for automation in client.read_automations_by_name(automation_name):
                client.delete_automation(automation.id)
                removed.append({"name": automation_name, "id": str(automation.id)})
        try:
            document = client.read_block_document_by_name(
                name=name, block_type_slug=CustomWebhookNotificationBlock.get_block_type_slug(), include_secrets=False
            )
        except ObjectNotFound:
            pass
        else:
            client.delete_block_document(document.id)
            block = {"name": name, "id": str(document.id)}
    return {"block": block, "automations": removed}
