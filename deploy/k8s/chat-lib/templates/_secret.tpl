{{/*
Secrets: the JWT secret (HS256) or public key (RS256/ES256), the MongoDB URI
and optionally the Redis URL (when it carries a password) or the Redis
password alone (a Redis Cluster with AUTH).

Where the Secret comes from, first match wins:
  1. secrets.existingSecret (per chart, or global.chat.secrets.existingSecret)
  2. secrets.shared: the one Secret the umbrella chart creates for all services
  3. secrets.create: a Secret this chart creates from secrets.* values
*/}}

{{- define "chat-lib.sharedSecretName" -}}
{{- if contains "chat" .Release.Name }}
{{- printf "%s-secrets" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-chat-secrets" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "chat-lib.secretName" -}}
{{- $s := include "chat-lib.secrets" . | fromYaml }}
{{- if $s.existingSecret }}
{{- tpl $s.existingSecret . }}
{{- else if and $s.shared $s.create }}
{{- include "chat-lib.sharedSecretName" . }}
{{- else if and $s.create (not $s.shared) }}
{{- include "chat-lib.fullname" . }}
{{- else }}
{{- fail "no Secret for JWT/MongoDB: set secrets.existingSecret, or secrets.create=true with secrets.* values" }}
{{- end }}
{{- end }}

{{/*
A Secret manifest. Argument: dict with
  ctx     the root context
  name    the Secret's name
  secrets the effective secrets values
  config  the effective config (for jwtAlgorithm)
  needs   dict(jwt bool, mongodb bool)
An empty secrets.jwtSecret gets a random one, kept across upgrades (lookup).
*/}}
{{- define "chat-lib.secretObject" -}}
{{- $ctx := .ctx }}
{{- $s := .secrets }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace .name }}
{{- $old := dict }}
{{- if and $existing $existing.data }}{{ $old = $existing.data }}{{ end }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- .labels | nindent 4 }}
  {{- with $s.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
type: Opaque
data:
{{- if .needs.jwt }}
{{- if ne (default "HS256" .config.jwtAlgorithm) "HS256" }}
  {{ $s.keys.jwtPublicKey }}: {{ required (printf "secrets.jwtPublicKey (PEM) is required with jwtAlgorithm %s, or use secrets.existingSecret" .config.jwtAlgorithm) $s.jwtPublicKey | b64enc | quote }}
{{- else if $s.jwtSecret }}
  {{ $s.keys.jwtSecret }}: {{ $s.jwtSecret | b64enc | quote }}
{{- else if hasKey $old $s.keys.jwtSecret }}
  {{ $s.keys.jwtSecret }}: {{ index $old $s.keys.jwtSecret | quote }}
{{- else }}
  {{ $s.keys.jwtSecret }}: {{ randAlphaNum 48 | b64enc | quote }}
{{- end }}
{{- end }}
{{- if .needs.mongodb }}
  {{ $s.keys.mongodbUri }}: {{ required "secrets.mongodbUri is required, or use secrets.existingSecret" $s.mongodbUri | b64enc | quote }}
{{- end }}
{{- if $s.redisUrlFromSecret }}
  {{ $s.keys.redisUrl }}: {{ required "secrets.redisUrl is required with secrets.redisUrlFromSecret, or use secrets.existingSecret" $s.redisUrl | b64enc | quote }}
{{- end }}
{{- if $s.redisPasswordFromSecret }}
  {{ $s.keys.redisPassword }}: {{ required "secrets.redisPassword is required with secrets.redisPasswordFromSecret, or use secrets.existingSecret" $s.redisPassword | b64enc | quote }}
{{- end }}
{{- end }}

{{/* The Secret of a service chart, when that chart creates its own. */}}
{{- define "chat-lib.secret" -}}
{{- $s := include "chat-lib.secrets" . | fromYaml }}
{{- if and $s.create (not $s.existingSecret) (not $s.shared) }}
{{- $needs := .Values.needs | default dict }}
{{- if or $needs.jwt $needs.mongodb $s.redisUrlFromSecret $s.redisPasswordFromSecret }}
{{- include "chat-lib.secretObject" (dict "ctx" . "name" (include "chat-lib.fullname" .) "secrets" $s "config" (include "chat-lib.config" . | fromYaml) "needs" $needs "labels" (include "chat-lib.labels" .)) }}
{{- end }}
{{- end }}
{{- end }}
