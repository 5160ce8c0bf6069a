"""JSON schemas for the custom resources the chart renders (kubernetes-validate has only built-ins).

Written from the KEDA 2.12+ and Prometheus Operator (ServiceMonitor, PodMonitor) CRDs, covering the
fields the chart uses and every top-level spec field they accept; KEDA's trigger metadata is map[string]string, so a
number there is an error the cluster would report too.
"""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
INT = {"type": "integer"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
NAME_REF = {"type": "object", "required": ["name"], "properties": {"name": STRING, "kind": STRING}}

SCALED_OBJECT_SPEC = {
    "type": "object",
    "required": ["scaleTargetRef", "triggers"],
    "additionalProperties": False,
    "properties": {
        "scaleTargetRef": NAME_REF,
        "minReplicaCount": INT, "maxReplicaCount": INT, "idleReplicaCount": INT,
        "pollingInterval": INT, "cooldownPeriod": INT, "initialCooldownPeriod": INT,
        "fallback": {"type": "object"},
        "advanced": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": {"type": "object", "properties": {
                    "name": STRING, "behavior": {"type": "object"}}},
                "scalingModifiers": {
                    "type": "object", "additionalProperties": False, "required": ["formula", "target"],
                    "properties": {"formula": STRING, "target": STRING, "activationTarget": STRING,
                                   "metricType": {"enum": ["AverageValue", "Value"]}}},
            },
        },
        "triggers": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
            "properties": {"type": STRING, "name": STRING, "metadata": STRING_MAP, "authenticationRef": NAME_REF,
                           "metricType": STRING, "useCachedMetrics": {"type": "boolean"}},
        }},
    },
}

TRIGGER_AUTHENTICATION_SPEC = {
    "type": "object",
    "properties": {"secretTargetRef": {"type": "array", "items": {
        "type": "object", "required": ["parameter", "name", "key"], "additionalProperties": False,
        "properties": {"parameter": STRING, "name": STRING, "key": STRING}}}},
}

SERVICE_MONITOR_SPEC = {
    "type": "object",
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": {"type": "object", "properties": {"matchLabels": STRING_MAP}},
        "endpoints": {"type": "array", "items": {"type": "object", "properties": {
            "port": STRING, "path": STRING, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}}}},
    },
}

RELABELING = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "separator": STRING, "targetLabel": STRING, "regex": STRING, "modulus": INT, "replacement": STRING,
    "action": STRING}}

POD_MONITOR_SPEC = {
    "type": "object",
    "required": ["selector", "podMetricsEndpoints"],
    "properties": {
        "selector": {"type": "object", "properties": {"matchLabels": STRING_MAP}},
        "podMetricsEndpoints": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                           "properties": {
            "port": STRING, "path": STRING, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
            "relabelings": {"type": "array", "items": RELABELING}}}},
    },
}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                       "metadata": {"type": "object", "required": ["name"]}, "spec": spec},
    }


#: kind -> schema of the whole object
SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": _resource("keda.sh/v1alpha1", "ScaledObject", SCALED_OBJECT_SPEC),
    "TriggerAuthentication": _resource("keda.sh/v1alpha1", "TriggerAuthentication", TRIGGER_AUTHENTICATION_SPEC),
    "ServiceMonitor": _resource("monitoring.coreos.com/v1", "ServiceMonitor", SERVICE_MONITOR_SPEC),
    "PodMonitor": _resource("monitoring.coreos.com/v1", "PodMonitor", POD_MONITOR_SPEC),
}
