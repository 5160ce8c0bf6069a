{{/* The chart name, overridable. */}}
{{- define "hotpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-qualified name, at most 63 characters (a DNS label). */}}
{{- define "hotpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* fullname-suffix within 63 characters: the fullname gives way, the suffix stays whole. Takes (list $ suffix). */}}
{{- define "hotpipe.suffixed" -}}
{{- $suffix := index . 1 }}
{{- $prefix := include "hotpipe.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{- define "hotpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "hotpipe.labels" -}}
helm.sh/chart: {{ include "hotpipe.chart" . }}
{{ include "hotpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: immutable once deployed, so only the name and the instance. */}}
{{- define "hotpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hotpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hotpipe.api.fullname" -}}
{{- include "hotpipe.suffixed" (list . "api") }}
{{- end }}

{{/* The API's address inside the cluster, through its Service. */}}
{{- define "hotpipe.api.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "hotpipe.api.fullname" .) .Release.Namespace .Values.api.service.port }}
{{- end }}

{{- define "hotpipe.api.selectorLabels" -}}
{{ include "hotpipe.selectorLabels" . }}
app.kubernetes.io/component: api
{{- end }}

{{- define "hotpipe.api.labels" -}}
{{ include "hotpipe.labels" . }}
app.kubernetes.io/component: api
{{- end }}

{{- define "hotpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hotpipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference; the tag defaults to the chart's appVersion. Takes (list $ .image). */}}
{{- define "hotpipe.image" -}}
{{- $root := index . 0 }}{{ $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* The non-secret settings every hotpipe process reads (HOTPIPE_* from .Values.settings). */}}
{{- define "hotpipe.settingsName" -}}
{{- include "hotpipe.suffixed" (list . "settings") }}
{{- end }}

{{/* Settings from existingSecrets and the redis values: Redis URL (and sentinels), S3 endpoint and
credentials, Hub token. */}}
{{- define "hotpipe.secretEnv" -}}
- name: HOTPIPE_REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret | quote }}, key: {{ .Values.redis.urlKey | quote }}}
{{- with .Values.redis.sentinel }}
{{- if .hosts }}
- name: HOTPIPE_REDIS_SENTINELS
  value: {{ join "," .hosts | quote }}
- name: HOTPIPE_REDIS_MASTER_NAME
  value: {{ .masterName | quote }}
{{- if .passwordKey }}
- name: HOTPIPE_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $.Values.redis.existingSecret | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.s3 }}
{{- if .existingSecret }}
{{- range $env, $key := dict "HOTPIPE_S3_ENDPOINT_URL" .endpointUrlKey "AWS_ACCESS_KEY_ID" .accessKeyIdKey "AWS_SECRET_ACCESS_KEY" .secretAccessKeyKey }}
{{- if $key }}
{{- /* optional: a key missing from the Secret leaves the variable unset (AWS S3, boto3's chain) */}}
- name: {{ $env }}
  valueFrom:
    secretKeyRef: {name: {{ $.Values.s3.existingSecret | quote }}, key: {{ $key | quote }}, optional: true}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.huggingface.existingSecret }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.huggingface.tokenKey | quote }}}
{{- end }}
{{- end }}

{{/* Where the Hugging Face cache is mounted (HF_HOME), in the API and the workers. */}}
{{- define "hotpipe.hfHome" -}}/cache/huggingface{{- end }}

{{/* Local checkpoints, mounted read-only at settings.model_root (only when models.volume is set). */}}
{{- define "hotpipe.modelsMount" -}}
- name: models
  mountPath: {{ .Values.settings.model_root | quote }}
  readOnly: true
{{- end }}

{{- define "hotpipe.modelsVolume" -}}
- name: models
  {{- toYaml .Values.models.volume | nindent 2 }}
{{- end }}

{{- define "hotpipe.settingsChecksum" -}}
checksum/settings: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end }}

{{/* The Secret holding the API key hashes: apiKeys.existingSecret, or the one made from apiKeys.entries; "" when neither. */}}
{{- define "hotpipe.apiKeys.secretName" -}}
{{- if .Values.apiKeys.existingSecret }}
{{- .Values.apiKeys.existingSecret }}
{{- else if .Values.apiKeys.entries }}
{{- include "hotpipe.suffixed" (list . "api-keys") }}
{{- end }}
{{- end }}

{{/* Where the API key file is mounted (a directory: a Secret's volume). */}}
{{- define "hotpipe.apiKeys.dir" -}}/etc/hotpipe/api-keys{{- end }}

{{/* True (non-empty) when the API gets keys somehow: the chart's Secret, settings.api_keys, or api.env. */}}
{{- define "hotpipe.apiKeys.configured" -}}
{{- $fromEnv := false }}
{{- range .Values.api.env }}
{{- if has .name (list "HOTPIPE_API_KEYS" "HOTPIPE_API_KEYS_FILE") }}{{ $fromEnv = true }}{{ end }}
{{- end }}
{{- if or (include "hotpipe.apiKeys.secretName" .) .Values.settings.api_keys $fromEnv }}true{{ end }}
{{- end }}
