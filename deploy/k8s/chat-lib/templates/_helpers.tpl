{{/*
Names, labels and merged values shared by every chat service chart.

Each service chart passes its root context (.) to these templates. Settings that
must agree across services (Redis, MongoDB database, JWT algorithm, command
partitions, ...) live under .Values.global.chat so that the umbrella chart sets
them once; a chart's own .Values.config / .Values.secrets / .Values.image win
over the global ones key by key.
*/}}

{{/*
app.kubernetes.io/name: chat-<component> whatever the chart is called or
aliased to (the umbrella aliases chat-gateway as "gateway"): Prometheus takes
its job label from it (job="chat-gateway"; deploy/prometheus/prometheus.k8s.yml).
*/}}
{{- define "chat-lib.name" -}}
{{- default (printf "chat-%s" (include "chat-lib.component" .)) .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat-lib.fullname" -}}
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

{{- define "chat-lib.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chat-lib.component" -}}
{{- required "component (gateway, delivery, presence or metrics) must be set in the service chart's values" .Values.component }}
{{- end }}

{{- define "chat-lib.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chat-lib.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chat-lib.labels" -}}
helm.sh/chart: {{ include "chat-lib.chart" . }}
{{ include "chat-lib.selectorLabels" . }}
app.kubernetes.io/component: {{ include "chat-lib.component" . }}
app.kubernetes.io/part-of: chat
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with (include "chat-lib.merged" (list (include "chat-lib.global" . | fromYaml).commonLabels .Values.commonLabels) | fromYaml) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* .Values.global.chat as YAML (empty map when unset). */}}
{{- define "chat-lib.global" -}}
{{- $g := dict }}
{{- with .Values.global }}{{ with .chat }}{{ $g = . }}{{ end }}{{ end }}
{{- toYaml $g }}
{{- end }}

{{/*
Merge two maps (list base override) and return YAML: scalar keys of override
replace those of base (false and 0 included; "" and null mean "not set" and
keep base), nested maps are merged.
*/}}
{{- define "chat-lib.merged" -}}
{{- $out := deepCopy (index . 0 | default dict) }}
{{- range $k, $v := (index . 1 | default dict) }}
{{- if and (kindIs "map" $v) (kindIs "map" (index $out $k)) }}
{{- $_ := set $out $k (mergeOverwrite (deepCopy (index $out $k)) $v) }}
{{- else if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Effective CHAT_* configuration: global.chat.config overridden by .Values.config. */}}
{{- define "chat-lib.config" -}}
{{- $g := include "chat-lib.global" . | fromYaml }}
{{- include "chat-lib.merged" (list $g.config .Values.config) }}
{{- end }}

{{/* Effective secrets settings: global.chat.secrets overridden by .Values.secrets. */}}
{{- define "chat-lib.secrets" -}}
{{- $g := include "chat-lib.global" . | fromYaml }}
{{- include "chat-lib.merged" (list $g.secrets .Values.secrets) }}
{{- end }}

{{/* Effective image settings: global.chat.image overridden by .Values.image. */}}
{{- define "chat-lib.imageValues" -}}
{{- $g := include "chat-lib.global" . | fromYaml }}
{{- include "chat-lib.merged" (list $g.image .Values.image) }}
{{- end }}

{{- define "chat-lib.image" -}}
{{- $img := include "chat-lib.imageValues" . | fromYaml }}
{{- $repo := required "image.repository is required" $img.repository }}
{{- if $img.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $repo }}{{ end }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (default .Chart.AppVersion $img.tag)) }}
{{- end }}
{{- end }}

{{- define "chat-lib.imagePullSecrets" -}}
{{- $g := include "chat-lib.global" . | fromYaml }}
{{- $all := concat ($g.imagePullSecrets | default list) (.Values.imagePullSecrets | default list) }}
{{- with $all }}
imagePullSecrets:
{{- range . }}
{{- if kindIs "string" . }}
  - name: {{ . }}
{{- else }}
  - {{ toYaml . | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chat-lib.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chat-lib.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A value as the string an environment variable gets (no 1e+06 for big numbers). */}}
{{- define "chat-lib.envString" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* camelCase config key -> CHAT_SNAKE_CASE variable name (keys already spelled CHAT_* pass through). */}}
{{- define "chat-lib.envName" -}}
{{- if hasPrefix "CHAT_" . }}{{ . }}{{ else }}{{ printf "CHAT_%s" (snakecase .) | upper }}{{ end }}
{{- end }}
