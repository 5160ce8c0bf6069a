{{/*
Checks that values.schema.json can't express; fails once, listing every problem found.
*/}}
{{- define "hotpipe.validate" -}}
{{- $errors := list }}
{{- if not .Values.redis.existingSecret }}
{{- $errors = append $errors (printf "redis.existingSecret is required: a Secret whose key %q holds the Redis URL (kubectl create secret generic hotpipe-redis --from-literal=%s=redis://HOST:6379/0)" .Values.redis.urlKey .Values.redis.urlKey) }}
{{- end }}
{{- range $key := list "redis_url" "redis_sentinels" "redis_master_name" "redis_sentinel_password" "s3_endpoint_url" "device" "dtype" "worker_ready_file" "shutdown_grace_s" "worker_metrics_port" "api_keys_file" }}
{{- if hasKey $.Values.settings $key }}
{{- $errors = append $errors (printf "settings.%s is set by the chart (%s); remove it from settings" $key (get (include "hotpipe.managedSettings" $ | fromJson) $key)) }}
{{- end }}
{{- end }}
{{- if and .Values.apiKeys.existingSecret .Values.apiKeys.entries }}
{{- $errors = append $errors "apiKeys: set existingSecret or entries, not both (entries make a Secret of their own)" }}
{{- end }}
{{- if and .Values.models.volume (not (hasPrefix "/" (toString .Values.settings.model_root))) }}
{{- $errors = append $errors (printf "settings.model_root must be an absolute path when models.volume is set (it is where the volume is mounted), not %q" (toString .Values.settings.model_root)) }}
{{- end }}
{{- with .Values.api.autoscaling }}
{{- if and .enabled (gt (.minReplicas | int) (.maxReplicas | int)) }}
{{- $errors = append $errors (printf "api.autoscaling.minReplicas (%v) is above maxReplicas (%v)" .minReplicas .maxReplicas) }}
{{- end }}
{{- end }}
{{- if and .Values.api.ingress.enabled (not .Values.api.ingress.hosts) }}
{{- $errors = append $errors "api.ingress.enabled needs at least one entry in api.ingress.hosts" }}
{{- end }}
{{- range $name, $pool := include "hotpipe.pools" . | fromJson }}
{{- $errors = concat $errors (include "hotpipe.validatePool" (list $ $name $pool) | fromJsonArray) }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nhotpipe: the values are invalid:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}

{{/* Settings the chart sets itself, and from where. */}}
{{- define "hotpipe.managedSettings" -}}
{{- toJson (dict
  "redis_url" "from redis.existingSecret"
  "redis_sentinels" "from redis.sentinel.hosts"
  "redis_master_name" "from redis.sentinel.masterName"
  "redis_sentinel_password" "from redis.sentinel.passwordKey in redis.existingSecret"
  "s3_endpoint_url" "from s3.existingSecret"
  "device" "per pool: workers.pools.<name>.device"
  "dtype" "per pool: workers.pools.<name>.dtype"
  "worker_ready_file" "for the readiness probe"
  "shutdown_grace_s" "per pool: workers.pools.<name>.gracefulShutdownSeconds"
  "worker_metrics_port" "the workers' metrics port, which the PodMonitor scrapes"
  "api_keys_file" "from apiKeys: existingSecret or entries") }}
{{- end }}

{{/* Problems with one enabled pool, as a JSON list. Takes (list $ name pool). */}}
{{- define "hotpipe.validatePool" -}}
{{- $root := index . 0 }}{{ $name := index . 1 }}{{ $pool := index . 2 }}
{{- $at := printf "workers.pools.%s" $name }}
{{- $errors := list }}
{{- if not $pool.family }}
{{- $errors = append $errors (printf "%s: family is required — the model family key the pool serves (e.g. stable-diffusion); its Celery queue has the same name" $at) }}
{{- end }}
{{- $gpus := include "hotpipe.pool.gpus" $pool | int }}
{{- $device := include "hotpipe.pool.device" $pool }}
{{- if gt $gpus 1 }}
{{- $errors = append $errors (printf "%s requests %d nvidia.com/gpu; a worker drives one device (prefork -c 1), so request 1 and raise replicas" $at $gpus) }}
{{- else if and (hasPrefix "cuda" $device) (eq $gpus 0) }}
{{- $errors = append $errors (printf "%s.device is %s but the pool requests no GPU: set resources.limits[\"nvidia.com/gpu\"] to 1" $at $device) }}
{{- else if and (eq $gpus 1) (not (hasPrefix "cuda" $device)) }}
{{- $errors = append $errors (printf "%s requests a GPU but its device is %s; set device to cuda:0 (or leave it empty)" $at $device) }}
{{- end }}
{{- if and (hasPrefix "cuda:" $device) (ne $device "cuda:0") }}
{{- $errors = append $errors (printf "%s.device is %s: a pod sees only the GPU it requests, as cuda:0" $at $device) }}
{{- end }}
{{- with $pool.cacheBudget }}
{{- if not (regexMatch "^[0-9]+$" (toString .)) }}
{{- $errors = append $errors (printf "%s.cacheBudget is %v; give the pipeline cache's budget in MiB, a whole number (or leave it empty)" $at .) }}
{{- end }}
{{- end }}
{{- with $pool.autoscaling }}
{{- if .enabled }}
{{- if gt (.minReplicas | int) (.maxReplicas | int) }}
{{- $errors = append $errors (printf "%s.autoscaling.minReplicas (%v) is above maxReplicas (%v)" $at .minReplicas .maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $errors }}
{{- end }}
