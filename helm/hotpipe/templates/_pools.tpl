{{/*
Worker pools: .Values.workers.pools is a map keyed by pool name. Each pool takes
workers.defaults key by key (a pool's key replaces the default's whole value, so a CPU pool
can drop the default GPU limit), except autoscaling and podDisruptionBudget, whose keys merge.
*/}}

{{/* Every enabled pool, merged with the defaults, as JSON {name: pool}. */}}
{{- define "hotpipe.pools" -}}
{{- $pools := dict }}
{{- range $name, $spec := .Values.workers.pools }}
{{- $pool := deepCopy $.Values.workers.defaults }}
{{- range $key, $value := $spec }}
{{- if and (has $key (list "autoscaling" "podDisruptionBudget")) (kindIs "map" $value) }}
{{- /* key by key with set: sprig's merge would let a default true win over the pool's false */}}
{{- $merged := deepCopy (get $pool $key | default dict) }}
{{- range $k, $v := $value }}{{ $_ := set $merged $k $v }}{{ end }}
{{- $_ := set $pool $key $merged }}
{{- else }}
{{- $_ := set $pool $key $value }}
{{- end }}
{{- end }}
{{- if $pool.enabled }}
{{- $_ := set $pools $name $pool }}
{{- end }}
{{- end }}
{{- toJson $pools }}
{{- end }}

{{/* A pool's object name; pool names are at most 40 characters, so it keeps the whole pool name. Takes (list $ name). */}}
{{- define "hotpipe.pool.fullname" -}}
{{- include "hotpipe.suffixed" (list (index . 0) (printf "worker-%s" (index . 1))) }}
{{- end }}

{{/* Selector labels of a pool's pods; the pool label keeps pools' selectors disjoint. */}}
{{- define "hotpipe.pool.selectorLabels" -}}
{{ include "hotpipe.selectorLabels" (index . 0) }}
app.kubernetes.io/component: worker
hotpipe.io/pool: {{ index . 1 }}
{{- end }}

{{/* Labels of a pool's objects. Takes (list $ name pool). */}}
{{- define "hotpipe.pool.labels" -}}
{{ include "hotpipe.labels" (index . 0) }}
app.kubernetes.io/component: worker
hotpipe.io/pool: {{ index . 1 }}
hotpipe.io/family: {{ (index . 2).family | quote }}
hotpipe.io/queue: {{ include "hotpipe.pool.queue" (index . 2) | quote }}
{{- end }}

{{/* The Celery queue a pool consumes: the family key itself (family_queue in shared/hotpipe/shared/queues.py). */}}
{{- define "hotpipe.pool.queue" -}}
{{- .family }}
{{- end }}

{{/* GPUs a pool's pod requests (resources.limits["nvidia.com/gpu"]). */}}
{{- define "hotpipe.pool.gpus" -}}
{{- dig "resources" "limits" "nvidia.com/gpu" 0 . | int }}
{{- end }}

{{/* The worker's device: the pool's own, else cuda:0 when it requests a GPU, else cpu. */}}
{{- define "hotpipe.pool.device" -}}
{{- if .device }}{{ .device }}{{ else if gt (include "hotpipe.pool.gpus" . | int) 0 }}cuda:0{{ else }}cpu{{ end }}
{{- end }}

{{/*
Seconds Kubernetes waits after SIGTERM before SIGKILL: the worker's own bound (gracefulShutdownSeconds,
rendered as HOTPIPE_SHUTDOWN_GRACE_S: the running job finishes or goes back to the queue) plus a
margin for giving the job back and exiting.
*/}}
{{- define "hotpipe.pool.terminationGrace" -}}
{{- add (.gracefulShutdownSeconds | int) 30 }}
{{- end }}

{{/* The port of a worker's /metrics (HOTPIPE_WORKER_METRICS_PORT; the setting's default, checked by tests/deploy). */}}
{{- define "hotpipe.workerMetricsPort" -}}9464{{- end }}

{{/* The file a worker touches once it consumes; in the container's own layer, so a restart starts unready. */}}
{{- define "hotpipe.readyFile" -}}/tmp/hotpipe-worker-ready{{- end }}
