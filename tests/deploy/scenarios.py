"""Values files the chart tests render: the defaults and the overrides platform teams write."""

from __future__ import annotations

from typing import Any

GPU = {"requests": {"cpu": "4", "memory": "24Gi"}, "limits": {"memory": "48Gi", "nvidia.com/gpu": 1}}
CPU = {"requests": {"cpu": "8", "memory": "16Gi"}, "limits": {"memory": "24Gi"}}

SCENARIOS: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "two-pools": {"workers": {"pools": {
        "stable-diffusion": None,
        "sdxl": {"family": "stable-diffusion-xl", "replicas": 3},
        "kandinsky-cpu": {"family": "kandinsky22", "resources": CPU, "tolerations": [], "dtype": "float32"},
    }}},
    "keda": {
        "redis": {"passwordKey": "password", "databaseIndex": 2},
        "workers": {
            "defaults": {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 6}},
            "pools": {"sdxl": {"family": "stable-diffusion-xl", "autoscaling": {"queuedJobsPerReplica": 1}},
                      "if": {"family": "if", "autoscaling": {"enabled": False}}},
        },
    },
    "ingress": {"api": {
        "ingress": {"enabled": True, "className": "nginx",
                    "hosts": [{"host": "diffusion.example.org", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "diffusion-tls", "hosts": ["diffusion.example.org"]}]},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
    }},
    "gpu-pools": {"workers": {"pools": {
        "stable-diffusion": {"device": "cuda:0", "dtype": "float16", "resources": GPU,
                             "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
        "flux": {"family": "flux", "dtype": "bfloat16", "resources": GPU, "gracefulShutdownSeconds": 1200,
                 "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "sd-cpu": {"family": "stable-diffusion", "device": "cpu", "resources": CPU, "tolerations": []},
    }}},
    "api-keys": {"apiKeys": {"entries": [{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                          "tenant": "acme"}]}},
    "everything": {
        "fullnameOverride": "diffusion",
        "s3": {"existingSecret": "hotpipe-s3"},
        "huggingface": {"existingSecret": "hf"},
        "webhooks": {"existingSecret": "hooks"},
        "apiKeys": {"existingSecret": "api-keys", "secretKey": "keys.txt"},
        "settings": {"s3_bucket": "images", "max_input_pixels": 16777216, "wait_max_s": 30.5, "s3_prefix": ""},
        "models": {"volume": {"persistentVolumeClaim": {"claimName": "checkpoints", "readOnly": True}}},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "dashboard": {"enabled": True, "annotations": {"grafana_folder": "ML"}}},
        "api": {"env": [{"name": "LOG_FORMAT", "value": "json"}], "podAnnotations": {"team": "ml"}},
        "workers": {"pools": {"stable-diffusion": {
            "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
            "autoscaling": {"enabled": True},
            "cacheVolume": {"persistentVolumeClaim": {"claimName": "hf-cache"}}}}},
    },
}
