#!/usr/bin/env python3
"""The fleet's Grafana dashboards, as code.

    python3 deploy/grafana/dashboards.py           # (re)write deploy/grafana/dashboards/*.json
    python3 deploy/grafana/dashboards.py --check   # exit 1 if the JSON differs from this file

Edit this file, not the JSON: the JSON is generated (and committed, so Grafana's file
provisioning can read it). scripts/check-deploy.sh runs --check, then checks every
panel has a description, the uids are fixed and unique, and every query names only
metrics the services export.

Three dashboards: the pipeline overview, alarms and paging (with the canary), and the
gateway fleet. Each panel says in its description what it shows, what normal looks
like, and where to look next. No query groups by pump or gateway: no metric has such a
label. Consumer lag is summed over a group's replicas (each exports its own share); the
gateway figures ingest exports are the whole fleet's on every replica, so they are
taken with max(), never sum().

Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"

# Every panel queries through the dashboard's data source variable, whose default is the
# data source provisioned by provisioning/datasources/fleet-prometheus.yaml.
DS = {"type": "prometheus", "uid": "${datasource}"}
DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {"text": "Fleet Prometheus", "value": "fleet-prometheus"},
    "hide": 0,
    "refresh": 1,
    "regex": "",
    "options": [],
}
SERVICES = 'job=~"fleet-(ingest|detector|notifier|archiver|api|canary)"'


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


def timeseries(title, description, *targets, unit="short", w=12, h=8, stack=False):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "targets": list(targets),
        "w": w,
        "h": h,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 20 if stack else 5,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, target, unit="short", w=6, h=4, red_above=None, mappings=None):
    steps = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "targets": [target],
        "w": w,
        "h": h,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
        },
    }


def text(title, description, content, w=24, h=4):
    return {
        "type": "text",
        "title": title,
        "description": description,
        "w": w,
        "h": h,
        "options": {"mode": "markdown", "content": content},
    }


def row(title, description):
    return {"type": "row", "title": title, "description": description}


def value_map(*pairs):
    """Stat value mappings: (value, text, color)."""
    return [
        {
            "type": "value",
            "options": {str(v): {"text": t, "color": c, "index": i} for i, (v, t, c) in enumerate(pairs)},
        }
    ]


def dashboard(uid, title, description, panels, variables=()):
    """Lays the panels out left to right in Grafana's 24-column grid; a row starts a
    new line. Ids are positions, so they are stable between generations."""
    laid = []
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        p = dict(p)
        p["id"] = i
        if p["type"] == "row":
            y += line_h
            x, line_h = 0, 0
            p.update(collapsed=False, panels=[], gridPos={"h": 1, "w": 24, "x": 0, "y": y})
            y += 1
        else:
            w, h = p.pop("w"), p.pop("h")
            if x + w > 24:
                y += line_h
                x, line_h = 0, 0
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x += w
            line_h = max(line_h, h)
            if p["type"] != "text":
                p["datasource"] = DS
                p["targets"] = [dict(t, refId=chr(ord("A") + n), datasource=DS) for n, t in enumerate(p["targets"])]
        laid.append(p)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fleet"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "utc",
        "links": [
            {
                "title": "Fleet dashboards",
                "type": "dashboards",
                "tags": ["fleet"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "annotations": {"list": []},
        "panels": laid,
    }


RATE = "$__rate_interval"

# ---------------------------------------------------------------------------------------
PIPELINE = dashboard(
    "fleet-pipeline",
    "Fleet / Pipeline overview",
    "Readings from MQTT through ingest, Kafka, the detector and the archiver: throughput, "
    "rejects, back-pressure and lag. Alert runbooks: docs/operations.md.",
    [
        row("Health", "Is every service up, and is the pipeline keeping up?"),
        stat(
            "Targets up",
            "Service pods Prometheus can scrape (ingest, detector, notifier, archiver, api, "
            "canary). Fewer than deployed: see FleetTargetDown.",
            q(f"sum(up{{{SERVICES}}})"),
        ),
        stat(
            "Readings into Kafka",
            "Valid readings per second ingest wrote to fleet.readings.v1, all replicas. Zero "
            "for long means nothing arrives from the gateways (FleetNoReadingsIngested).",
            q(f"sum(rate(fleet_ingest_readings_total[{RATE}]))"),
            unit="reqps",
        ),
        stat(
            "Dead-lettered (1 h)",
            "Share of messages ingest rejected over the last hour. Above 1 % see the dead "
            "letters by reason below (FleetDeadLettersElevated).",
            q(
                "sum(increase(fleet_ingest_dead_letters_total[1h])) / (sum(increase(fleet_ingest_readings_total[1h]))"
                " + sum(increase(fleet_ingest_dead_letters_total[1h])))"
            ),
            unit="percentunit",
            red_above=0.01,
        ),
        stat(
            "Detector behind",
            "Wall clock minus the slowest partition's event-time clock: how late alarms are "
            "raised. Normally under a few minutes; 15 minutes pages (FleetDetectorBehind).",
            q("max(fleet_detector_clock_lag_seconds)"),
            unit="s",
            red_above=900,
        ),
        row("Ingest (MQTT to Kafka)", "fleet-ingest: what arrives from the gateways and what it does with it."),
        timeseries(
            "Readings written per replica",
            "Valid readings per second each ingest replica wrote to Kafka. Replicas share one "
            "MQTT subscription, so the split should be roughly even.",
            q(f"sum by (instance) (rate(fleet_ingest_readings_total[{RATE}]))", "{{instance}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Dead letters by reason",
            "Messages per second written to fleet.deadletter.v1, by reason code (unknown_pump, "
            "wrong_gateway, undecodable, oversized, future_timestamp, ...). unknown_pump usually "
            "means a registry that was not imported.",
            q(f"sum by (reason) (rate(fleet_ingest_dead_letters_total[{RATE}]))", "{{reason}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Readings in flight",
            "Readings received but not yet confirmed by Kafka, per replica. At --max-in-flight "
            "(2,000 by default) the replica stops reading MQTT and the broker holds the rest.",
            q("sum by (instance) (fleet_ingest_in_flight_readings)", "{{instance}}"),
        ),
        timeseries(
            "Kafka retries, MQTT disconnects, PUBACK waits",
            "Kafka writes retried, MQTT connections lost and PUBACKs that waited for room, per "
            "second. Sustained retries mean Kafka is not accepting writes (FleetIngestCannotWriteKafka).",
            q(f"sum(rate(fleet_ingest_produce_retries_total[{RATE}]))", "Kafka write retries"),
            q(f"sum(rate(fleet_ingest_mqtt_disconnects_total[{RATE}]))", "MQTT disconnects"),
            q(f"sum(rate(fleet_ingest_puback_waits_total[{RATE}]))", "PUBACK waits"),
            unit="ops",
        ),
        row("Kafka consumers", "How far the consumers are behind the log, as their own Kafka clients report it."),
        timeseries(
            "Consumer lag by group",
            "Records each consumer group has not yet committed (the broker's high watermark "
            "minus the group's committed offset), summed over the group's replicas, as each "
            "replica's Kafka client reports every 5 seconds. The detector and notifier are the "
            "alarm path (FleetAlarmPathConsumerLag at 5,000), the archiver the archive "
            "(FleetArchiveConsumerLag at 100,000). The detector commits at each checkpoint (1 s), "
            "so a few seconds of readings is normal. A group with no replica running shows "
            "nothing: see Targets up.",
            q("sum(fleet_detector_consumer_lag_records)", "detector"),
            q("sum(fleet_notifier_consumer_lag_records)", "notifier"),
            q("sum(fleet_archiver_consumer_lag_records)", "archiver"),
        ),
        timeseries(
            "Consumer lag per replica",
            "Each replica's share of its group's lag: the partitions it owns. One replica far "
            "above the others owns a hot or stuck partition; a replica that owns none reports 0.",
            q("max by (instance) (fleet_detector_consumer_lag_records)", "detector {{instance}}"),
            q("max by (instance) (fleet_notifier_consumer_lag_records)", "notifier {{instance}}"),
            q("max by (instance) (fleet_archiver_consumer_lag_records)", "archiver {{instance}}"),
        ),
        timeseries(
            "Detector clock lag per replica",
            "Wall clock minus the slowest owned partition's event-time clock, per detector "
            "replica. Climbs when the detector falls behind the readings topic.",
            q("max by (instance) (fleet_detector_clock_lag_seconds)", "{{instance}}"),
            unit="s",
        ),
        row("Detector", "fleet-detector: the alarm rules over the readings topic, checkpointed in PostgreSQL."),
        timeseries(
            "Readings applied",
            "Readings per second applied to the detection rules, per replica.",
            q(f"sum by (instance) (rate(fleet_detector_readings_total[{RATE}]))", "{{instance}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Partitions owned",
            "Readings-topic partitions each replica owns. The sum should equal the topic's "
            "partition count (FleetDetectorPartitionsUnowned); spare replicas own none.",
            q("sum by (instance) (fleet_detector_partitions)", "{{instance}}"),
            stack=True,
        ),
        timeseries(
            "Pumps in state",
            "Pumps whose detection state each replica holds; memory grows with it.",
            q("sum by (instance) (fleet_detector_pumps)", "{{instance}}"),
            stack=True,
        ),
        timeseries(
            "Checkpoints",
            "Partition checkpoints written and failed per second. Failures mean PostgreSQL "
            "trouble (FleetDetectorCheckpointsFailing).",
            q(f"sum(rate(fleet_detector_checkpoints_total[{RATE}]))", "written"),
            q(f"sum(rate(fleet_detector_checkpoint_failures_total[{RATE}]))", "failed"),
            unit="ops",
        ),
        timeseries(
            "Rewinds, fencing, gaps, skips",
            "Per hour: partitions rewound after unconfirmed alarm events, checkpoints refused "
            "because another replica took the partition (normal around rebalances), offset gaps "
            "(readings expired before being read: FleetDetectorOffsetGap), and records skipped "
            "as already reflected by a restored checkpoint.",
            q("sum(increase(fleet_detector_rewinds_total[1h]))", "rewinds"),
            q("sum(increase(fleet_detector_fenced_total[1h]))", "fenced"),
            q("sum(increase(fleet_detector_offset_gaps_total[1h]))", "offset gaps"),
            q("sum(increase(fleet_detector_records_skipped_total[1h]))", "skipped"),
        ),
        timeseries(
            "Alarm events awaiting the broker",
            "Alarm events sent to fleet.alarms.v1 and not yet confirmed, and those the broker "
            "failed to confirm per second (FleetAlarmEventsUnconfirmed).",
            q("sum(fleet_detector_pending_deliveries)", "pending"),
            q(f"sum(rate(fleet_detector_alarm_delivery_failures_total[{RATE}]))", "unconfirmed per second"),
        ),
        row("Archiver", "fleet-archiver: readings and alarm events into the surveillance archive."),
        timeseries(
            "Records archived by kind",
            "Records written to the archive for the first time per second (reading, alarm). "
            "Should track the readings into Kafka.",
            q(f"sum by (kind) (rate(fleet_archiver_archived_total[{RATE}]))", "{{kind}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Duplicates by kind",
            "Records that were already archived (re-read after a restart, or re-sent by a "
            "gateway), per second. Harmless; a steady high rate means gateways resend a lot.",
            q(f"sum by (kind) (rate(fleet_archiver_duplicates_total[{RATE}]))", "{{kind}}"),
            unit="reqps",
        ),
        timeseries(
            "Batches",
            "Batches committed per second, and the size of each replica's last batch (5,000 at "
            "most by default). Full batches mean the archiver runs flat out.",
            q(f"sum(rate(fleet_archiver_batches_total[{RATE}]))", "batches per second"),
            q("max by (instance) (fleet_archiver_last_batch_size)", "last batch size {{instance}}"),
        ),
        timeseries(
            "Write errors, undecodable records",
            "Failed batch writes per second (retried; FleetArchiveWriteErrors) and records "
            "skipped as undecodable per hour (FleetUndecodableRecords).",
            q(f"sum(rate(fleet_archiver_write_errors_total[{RATE}]))", "write errors per second"),
            q("sum(increase(fleet_archiver_undecodable_total[1h]))", "undecodable per hour"),
        ),
        stat(
            "Archive storage path",
            "How the archive's readings are stored, as settled when the archive was first "
            "written: a TimescaleDB hypertable or range-partitioned PostgreSQL.",
            q("max(fleet_archiver_timescaledb)"),
            w=24,
            h=3,
            mappings=value_map(
                (1, "TimescaleDB hypertable", "green"), (0, "partitioned PostgreSQL", "blue")
            ),
        ),
    ],
)

# ---------------------------------------------------------------------------------------
CLINIC_VARIABLE = {
    "name": "clinic",
    "label": "Clinic",
    "type": "query",
    "datasource": DS,
    "definition": "label_values(fleet_notifier_pages_delivered_total, clinic)",
    "query": {"query": "label_values(fleet_notifier_pages_delivered_total, clinic)", "refId": "clinic"},
    "includeAll": True,
    "allValue": ".*",
    "multi": True,
    "refresh": 2,
    "sort": 1,
    "current": {"text": "All", "value": "$__all"},
    "hide": 0,
    "options": [],
}
CLINIC = 'clinic=~"$clinic"'

ALARMS = dashboard(
    "fleet-alarms-paging",
    "Fleet / Alarms and paging",
    "Alarms the detector raises and the pages the notifier delivers to clinics: per kind, "
    "per clinic, failures, escalations and operator alarms, and the canary that pages itself "
    "through the whole pipeline. Alert runbooks: docs/operations.md.",
    [
        row("Now", "The last day at a glance."),
        stat(
            "Alarms raised (24 h)",
            "New alarm episodes (RAISED events) over the last 24 hours, all kinds.",
            q('sum(increase(fleet_detector_alarm_events_total{state="RAISED"}[24h]))'),
        ),
        stat(
            "Operator alarms (24 h)",
            "Pages that kept failing past the bound, or clinic circuits that opened, over 24 "
            "hours. Anything above 0 needs an operator (FleetOperatorAlarm).",
            q("sum(increase(fleet_notifier_operator_alarms_total[24h]))"),
            red_above=1,
        ),
        stat(
            "Unroutable alarms (24 h)",
            "Alarm events for pumps no clinic follows, over 24 hours: paged to nobody. Must be 0 "
            "(FleetUnroutableAlarm).",
            q("sum(increase(fleet_notifier_unroutable_total[24h]))"),
            red_above=1,
        ),
        stat(
            "Canary: since last success",
            "Time since the synthetic pump's reading last went all the way to the canary's "
            "receiver as a page. About one interval (60 s) when healthy; the canary's operator "
            "alarm fires at its deadline (5 minutes, FleetCanaryOperatorAlarm), FleetCanaryMissing "
            "at 15 minutes. Empty where no canary runs.",
            q("time() - max(fleet_canary_last_success_timestamp_seconds)"),
            unit="s",
            red_above=300,
        ),
        row(
            "Canary",
            "fleet-canary: a synthetic pump whose reading must come back as a page every round "
            "(docs/operations.md, The canary).",
        ),
        stat(
            "Canary operator alarm",
            "1 while a canary round's page is overdue past the deadline: the pipeline is not "
            "paging clinics (FleetCanaryOperatorAlarm). The stage the canary suspects is in the "
            "panel 'Operator alarms by suspected stage' and in its log.",
            q("max(fleet_canary_operator_alarm_active)"),
            red_above=1,
            mappings=value_map((0, "OK", "green"), (1, "ALARM", "red")),
        ),
        stat(
            "Canary round trip (p95, 1 h)",
            "95th percentile over the last hour of the time from a round's reading handed to the "
            "canary's gateway to its page at the canary's receiver: the pipeline's end-to-end "
            "alarm latency, MQTT to page.",
            q("histogram_quantile(0.95, sum by (le) (rate(fleet_canary_round_trip_seconds_bucket[1h])))"),
            unit="s",
            red_above=60,
        ),
        stat(
            "Canary rounds outstanding",
            "Rounds started and not yet paged. 0 or 1 when healthy (a round is out for its round "
            "trip); it climbs by one per interval while the pipeline is stuck.",
            q("max(fleet_canary_rounds_outstanding)"),
            red_above=3,
        ),
        stat(
            "Canary rounds lost (24 h)",
            "Rounds whose page never came although a later round's did, or that were out too "
            "long to tell apart, over 24 hours (FleetCanaryRoundsLost). Should be 0.",
            q("sum(increase(fleet_canary_rounds_lost_total[24h]))"),
            red_above=1,
        ),
        timeseries(
            "Canary round trip",
            "Median and 95th percentile of the canary's round trip (reading to page), over 10 "
            "minutes. Seconds when healthy; it rises with the detector's or notifier's lag.",
            q("histogram_quantile(0.5, sum by (le) (rate(fleet_canary_round_trip_seconds_bucket[10m])))", "p50"),
            q("histogram_quantile(0.95, sum by (le) (rate(fleet_canary_round_trip_seconds_bucket[10m])))", "p95"),
            unit="s",
        ),
        timeseries(
            "Canary rounds per hour",
            "Rounds started (one per interval), completed (their page arrived) and lost, per "
            "hour. Started and completed should match.",
            q("sum(increase(fleet_canary_rounds_started_total[1h]))", "started"),
            q("sum(increase(fleet_canary_rounds_completed_total[1h]))", "completed"),
            q("sum(increase(fleet_canary_rounds_lost_total[1h]))", "lost"),
        ),
        timeseries(
            "Pages at the canary's receiver",
            "Pages per hour at the operators' clinic's receiver by outcome: completed (a round's "
            "page), unmatched (a duplicate or from before a restart), other (the clear, "
            "escalations), foreign (a real pump assigned to the operators' clinic: "
            "FleetCanaryForeignPage), refused (bad signature or unreadable).",
            q("sum by (outcome) (increase(fleet_canary_pages_total[1h]))", "{{outcome}}"),
        ),
        timeseries(
            "Operator alarms by suspected stage",
            "Canary operator alarms fired per hour, by the stage it suspects: not_started (the "
            "canary's own gateway takes no readings), unacknowledged (MQTT broker, ingest or "
            "Kafka), unpaged (detector, notifier, or the way back); and failed attempts to "
            "re-register its clinic and pump.",
            q("sum by (stage) (increase(fleet_canary_alarms_total[1h]))", "{{stage}}"),
            q("sum(increase(fleet_canary_registry_failures_total[1h]))", "registry failures"),
        ),
        row("Alarms", "fleet-detector's alarm events on fleet.alarms.v1."),
        timeseries(
            "Raised per hour by kind",
            "New alarm episodes per hour by kind (LOW_RESERVOIR, MISSED_REFILL, BATTERY_EOL, "
            "LOW_BATTERY_RESETS, OCCLUSION, TELEMETRY_LOST). A jump in TELEMETRY_LOST across "
            "many pumps points at the gateways' way in, not at the pumps. LOW_RESERVOIR includes "
            "the canary's, one per round (60 an hour by default).",
            q('sum by (kind) (increase(fleet_detector_alarm_events_total{state="RAISED"}[1h]))', "{{kind}}"),
            stack=True,
        ),
        timeseries(
            "Updated and cleared per hour",
            "Alarm events per hour that changed an episode's priority (UPDATED) or ended it (CLEARED).",
            q("sum by (state) (increase(fleet_detector_alarm_events_total{state!=\"RAISED\"}[1h]))", "{{state}}"),
        ),
        row("Paging", "fleet-notifier: delivery to each clinic's AlarmReceiver."),
        timeseries(
            "Pages delivered by clinic",
            "Pages per second a clinic's receiver accepted (all targets).",
            q(f"sum by (clinic) (rate(fleet_notifier_pages_delivered_total{{{CLINIC}}}[{RATE}]))", "{{clinic}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Pages delivered by target",
            "Accepted pages per second by where they went: primary (the clinic's webhook), "
            "escalation (its escalation webhook), fallback (after failures or an open circuit). "
            "Steady fallback traffic means a clinic's primary receiver is down.",
            q(f"sum by (target) (rate(fleet_notifier_pages_delivered_total{{{CLINIC}}}[{RATE}]))", "{{target}}"),
            unit="reqps",
            stack=True,
        ),
        timeseries(
            "Failed attempts by clinic",
            "Delivery attempts per second that failed, by clinic. Retries never stop; see "
            "FleetPageDeliveryFailing for the ratio that alerts.",
            q(f"sum by (clinic) (rate(fleet_notifier_attempts_failed_total{{{CLINIC}}}[{RATE}]))", "{{clinic}}"),
            unit="ops",
        ),
        timeseries(
            "Circuits opened and operator alarms by clinic",
            "Per hour: times a clinic's circuit breaker opened, and operator alarms raised for it.",
            q(f"sum by (clinic) (increase(fleet_notifier_breaker_opened_total{{{CLINIC}}}[1h]))", "circuit opened {{clinic}}"),
            q(f"sum by (clinic) (increase(fleet_notifier_operator_alarms_total{{{CLINIC}}}[1h]))", "operator alarm {{clinic}}"),
        ),
        timeseries(
            "Intake and escalations",
            "Per second: alarm events taken into the delivery log for the first time, escalation "
            "pages created for unacknowledged HIGH and MEDIUM alarms, and unroutable events.",
            q(f"sum(rate(fleet_notifier_alarm_events_total[{RATE}]))", "alarm events taken in"),
            q(f"sum(rate(fleet_notifier_escalations_total[{RATE}]))", "escalations"),
            q(f"sum(rate(fleet_notifier_unroutable_total[{RATE}]))", "unroutable"),
            unit="ops",
        ),
        timeseries(
            "Deliveries in progress, log errors",
            "Pages being delivered right now (all replicas), and delivery-log operations in "
            "PostgreSQL that failed per second (FleetNotifierLogErrors).",
            q("sum(fleet_notifier_in_flight)", "in flight"),
            q(f"sum(rate(fleet_notifier_log_errors_total[{RATE}]))", "log errors per second"),
        ),
        row("Registry", "The registry (clinics, pumps, gateways) as ingest and the notifier hold it."),
        timeseries(
            "Registry version in use",
            "Version of the registry each service works with. Ingest and the notifier should "
            "agree within a refresh interval (10 s) of an import.",
            q("max by (instance) (fleet_ingest_registry_version)", "ingest {{instance}}"),
            q("max by (instance) (fleet_notifier_registry_version)", "notifier {{instance}}"),
        ),
        timeseries(
            "Registry refresh failures",
            "Failed registry refreshes per hour (the registry in hand stays in use; "
            "FleetRegistryRefreshFailing).",
            q("sum(increase(fleet_ingest_registry_refresh_failures_total[1h]))", "ingest"),
            q("sum(increase(fleet_notifier_registry_refresh_failures_total[1h]))", "notifier"),
        ),
    ],
    variables=[CLINIC_VARIABLE],
)

# ---------------------------------------------------------------------------------------
GATEWAYS = dashboard(
    "fleet-gateway-fleet",
    "Fleet / Gateway fleet",
    "The home gateways as they report themselves (their retained statuses, totalled by "
    "ingest) and as the pipeline sees them, and the gateway processes Prometheus can scrape "
    "directly. Gateways in patients' homes are not scraped.",
    [
        text(
            "What this dashboard can and cannot see",
            "Where the figures on this dashboard come from, and what they miss.",
            "Gateways run in patients' homes and are **not scraped**. Each keeps a retained "
            "status on `fleet/v1/{gateway}/status` (online, outbox depth, readings dropped, when "
            "its certificate ends), "
            "refreshed every minute while connected, and its last will turns it offline. "
            "Every ingest replica follows all of them and exports **fleet totals** (never one "
            "series per gateway), so the first row takes `max()` over replicas. An offline "
            "gateway counts with the outbox it last reported: what piles up while it is cut off "
            "shows when it reconnects. The second row is what the pipeline sees of the "
            "gateways; the third covers gateway processes Prometheus does scrape (lab and soak "
            "fleets, job fleet-gateway).",
        ),
        row(
            "The gateways' own reports",
            "Totals over every gateway's retained status, from ingest (fleet_ingest_gateway*).",
        ),
        stat(
            "Gateways online",
            "Gateways whose last status says online. A sudden fall across the fleet is the "
            "broker or the homes' way to it, not many gateways at once.",
            q('max(fleet_ingest_gateways{state="online"})'),
        ),
        stat(
            "Gateways offline",
            "Gateways whose last status says offline (an orderly goodbye or their last will). "
            "Includes gateways retired without clearing their retained status.",
            q('max(fleet_ingest_gateways{state="offline"})'),
        ),
        stat(
            "Readings in outboxes",
            "Readings the gateways hold without an end-to-end ack, summed over the fleet as last "
            "reported. Small in steady state; growing for an hour is FleetGatewayBacklogGrowing.",
            q("max(fleet_ingest_gateway_outbox_readings)"),
        ),
        stat(
            "Deepest outbox",
            "The largest single gateway outbox (recomputed every 10 s). Above 10,000 for an hour "
            "is FleetGatewayOutboxDeep; at its capacity (50,000 by default) a gateway drops "
            "routine readings.",
            q("max(fleet_ingest_gateway_outbox_max_readings)"),
            red_above=10000,
        ),
        timeseries(
            "Gateways online and offline",
            "Gateways by their last retained status. Offline ones keep their retained status "
            "until it is cleared, so the offline count also holds retired gateways.",
            q('max(fleet_ingest_gateways{state="online"})', "online"),
            q('max(fleet_ingest_gateways{state="offline"})', "offline"),
            stack=True,
        ),
        timeseries(
            "Readings waiting in outboxes",
            "The fleet's total of unacknowledged readings and the deepest single outbox. A "
            "total that keeps rising while readings still arrive means acks are not getting "
            "back to the gateways (FleetIngestAcksDropped, the broker's ACL on acks).",
            q("max(fleet_ingest_gateway_outbox_readings)", "all outboxes"),
            q("max(fleet_ingest_gateway_outbox_max_readings)", "deepest outbox"),
        ),
        timeseries(
            "Readings dropped from full outboxes",
            "Readings the gateways report having dropped from full outboxes, summed over their "
            "lifetimes (it falls when a gateway's status is cleared), and its rise over the last "
            "hour: readings lost at homes (FleetGatewayReadingsDropped). The rise should be 0.",
            q("max(fleet_ingest_gateway_outbox_dropped_readings)", "dropped, lifetime total"),
            q(
                "max(fleet_ingest_gateway_outbox_dropped_readings) - max(fleet_ingest_gateway_outbox_dropped_readings offset 1h)",
                "dropped in the last hour",
            ),
        ),
        timeseries(
            "Statuses not counted",
            "Per hour: gateway statuses ingest could not read (or that named another gateway "
            "than their topic), and statuses of gateways beyond --gateway-status-capacity "
            "(FleetGatewayStatusOverCapacity: the totals undercount the fleet).",
            q("max(increase(fleet_ingest_gateway_status_invalid_total[1h]))", "unreadable"),
            q("max(increase(fleet_ingest_gateway_status_over_capacity_total[1h]))", "over capacity"),
        ),
        stat(
            "Gateway certificates expiring",
            "Gateways whose MQTT certificate (or its CA) has ended or ends within 30 days, as "
            "their statuses last said. Above 0 for an hour is FleetGatewayCertificatesExpiring: "
            "renew them before the broker locks them out and their pumps go silent.",
            q("max(fleet_ingest_gateway_certificates_expiring)"),
            w=12,
            red_above=1,
        ),
        stat(
            "Days to the first gateway certificate expiry",
            "Days until the first certificate (or CA) any gateway reports ends; empty when no "
            "gateway reports one (plain MQTT).",
            q(
                "((max(fleet_ingest_gateway_certificate_earliest_expiry_timestamp_seconds) > 0) - time()) / 86400"
            ),
            unit="d",
            w=12,
        ),
        row("Seen from the cloud", "What the pipeline observes of the gateways."),
        timeseries(
            "Readings arriving",
            "Valid readings per second that gateways got into Kafka. A step down across the "
            "fleet is a broker or network problem, not many pumps at once.",
            q(f"sum(rate(fleet_ingest_readings_total[{RATE}]))", "readings"),
            unit="reqps",
        ),
        timeseries(
            "Rejects that point at gateways",
            "Dead letters per second whose reason is about the gateway or its pairing: "
            "unknown_pump and wrong_gateway (registry), gateway_mismatch (payload and topic "
            "disagree), future_timestamp (gateway clock), bad_topic.",
            q(
                "sum by (reason) (rate(fleet_ingest_dead_letters_total"
                f'{{reason=~"unknown_pump|wrong_gateway|gateway_mismatch|future_timestamp|bad_topic"}}[{RATE}]))',
                "{{reason}}",
            ),
            unit="reqps",
        ),
        timeseries(
            "End-to-end acks",
            "Ack messages per second ingest sent to gateways, and acks dropped for want of room "
            "(their readings are resent and stay in the gateways' outboxes: FleetIngestAcksDropped).",
            q(f"sum(rate(fleet_ingest_acks_sent_total[{RATE}]))", "sent"),
            q(f"sum(rate(fleet_ingest_acks_dropped_total[{RATE}]))", "dropped"),
            unit="ops",
        ),
        timeseries(
            "Pumps going silent and coming back",
            "TELEMETRY_LOST episodes raised and cleared per hour. Many at once means gateways "
            "lost their way in (broker, DNS, certificates), not that pumps failed.",
            q('sum(increase(fleet_detector_alarm_events_total{kind="TELEMETRY_LOST",state="RAISED"}[1h]))', "raised"),
            q('sum(increase(fleet_detector_alarm_events_total{kind="TELEMETRY_LOST",state="CLEARED"}[1h]))', "cleared"),
        ),
        row(
            "Gateway processes scraped directly",
            "Lab and soak fleet-gateway processes only (job fleet-gateway); the canary's gateway "
            "is not among them (it shows in the rows above like any gateway).",
        ),
        timeseries(
            "Outbox depth",
            "Readings waiting for an end-to-end ack, per gateway process. Small in steady state; "
            "steady growth means acks are not coming back (FleetGatewayOutboxGrowing).",
            q("sum by (instance) (fleet_gateway_outbox_depth_readings)", "{{instance}}"),
        ),
        timeseries(
            "Readings dropped from a full outbox",
            "Routine readings dropped per hour because the outbox was full: readings lost at "
            "the gateway (FleetGatewayOutboxDropping). Must be 0.",
            q("sum by (instance) (increase(fleet_gateway_outbox_dropped_total[1h]))", "{{instance}}"),
        ),
        timeseries(
            "Published, acknowledged, resent",
            "Readings per second published (first sends and resends), removed on an end-to-end "
            "ack, and published again for want of an ack.",
            q(f"sum(rate(fleet_gateway_published_total[{RATE}]))", "published"),
            q(f"sum(rate(fleet_gateway_acked_total[{RATE}]))", "acknowledged"),
            q(f"sum(rate(fleet_gateway_resent_total[{RATE}]))", "resent"),
            unit="reqps",
        ),
        timeseries(
            "Connections",
            "Gateways of the scraped processes connected to the broker, and per hour the MQTT "
            "connections they lost and the acks they could not read.",
            q("sum(fleet_gateway_mqtt_connected_gateways)", "connected"),
            q("sum(increase(fleet_gateway_mqtt_reconnects_total[1h]))", "connections lost per hour"),
            q("sum(increase(fleet_gateway_bad_acks_total[1h]))", "unreadable acks per hour"),
        ),
    ],
)

ALL = {"pipeline-overview.json": PIPELINE, "alarms-paging.json": ALARMS, "gateway-fleet.json": GATEWAYS}


def render(d: dict) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, d in ALL.items():
        path = OUT / name
        want = render(d)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != want:
                stale.append(str(path))
        else:
            path.write_text(want, encoding="utf-8")
    if stale:
        print("dashboards out of date with deploy/grafana/dashboards.py (run it):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
