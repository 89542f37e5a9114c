{{/*
ConfigMap and container environment.

Every key of the effective config (global.chat.config + .Values.config) becomes
CHAT_<SNAKE_CASE> in a ConfigMap loaded with envFrom; empty values are left out
so the service's own default applies. Secrets never go through the ConfigMap.
*/}}

{{- define "chat-lib.secretConfigKeys" -}}
{{- list "jwtSecret" "mongodbUri" "adminToken" "redisPassword" "CHAT_JWT_SECRET" "CHAT_MONGODB_URI" "CHAT_ADMIN_TOKEN" "CHAT_REDIS_PASSWORD" | toYaml }}
{{- end }}

{{/* The CHAT_* variables the ConfigMap holds, as a YAML map. */}}
{{- define "chat-lib.configData" -}}
{{- $cfg := include "chat-lib.config" . | fromYaml }}
{{- $secretKeys := include "chat-lib.secretConfigKeys" . | fromYamlArray }}
{{- $owned := list "httpHost" "instanceId" "CHAT_HTTP_HOST" "CHAT_INSTANCE_ID" }}
{{- $s := include "chat-lib.secrets" . | fromYaml }}
{{- $data := dict }}
{{- range $k, $v := $cfg }}
{{- if has $k $secretKeys }}
{{- fail (printf "config.%s is a secret: put it in a Kubernetes Secret (secrets.existingSecret or secrets.*), not in config" $k) }}
{{- end }}
{{- $skip := or (has $k $owned) (and $s.redisUrlFromSecret (or (eq $k "redisUrl") (eq $k "CHAT_REDIS_URL"))) }}
{{- if and (not $skip) (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
{{- $_ := set $data (include "chat-lib.envName" $k) (include "chat-lib.envString" $v) }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{- define "chat-lib.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "chat-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "chat-lib.labels" . | nindent 4 }}
data:
  {{- range $k, $v := (include "chat-lib.configData" . | fromYaml) }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
{{- end }}

{{/* Is the JWT verified with a public key file (RS256/ES256) rather than a shared secret? */}}
{{- define "chat-lib.jwtUsesPublicKey" -}}
{{- $cfg := include "chat-lib.config" . | fromYaml }}
{{- if ne (default "HS256" $cfg.jwtAlgorithm) "HS256" }}true{{ end }}
{{- end }}

{{- define "chat-lib.jwtPublicKeyDir" -}}/etc/chat/jwt{{- end }}
{{- define "chat-lib.jwtPublicKeyFile" -}}public.pem{{- end }}

{{/* The container's env list (without the "env:" key). */}}
{{- define "chat-lib.env" -}}
{{- $s := include "chat-lib.secrets" . | fromYaml }}
{{- $component := include "chat-lib.component" . -}}
- name: CHAT_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: CHAT_HTTP_HOST
  value: "0.0.0.0"
- name: {{ printf "CHAT_%s_PORT" (upper $component) }}
  value: {{ .Values.port | quote }}
{{- if .Values.needs.jwt }}
{{- if include "chat-lib.jwtUsesPublicKey" . }}
- name: CHAT_JWT_PUBLIC_KEY
  value: {{ printf "%s/%s" (include "chat-lib.jwtPublicKeyDir" .) (include "chat-lib.jwtPublicKeyFile" .) | quote }}
{{- else }}
- name: CHAT_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "chat-lib.secretName" . }}
      key: {{ $s.keys.jwtSecret }}
{{- end }}
{{- end }}
{{- if .Values.needs.mongodb }}
- name: CHAT_MONGODB_URI
  valueFrom:
    secretKeyRef:
      name: {{ include "chat-lib.secretName" . }}
      key: {{ $s.keys.mongodbUri }}
{{- end }}
{{- if $s.redisUrlFromSecret }}
- name: CHAT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "chat-lib.secretName" . }}
      key: {{ $s.keys.redisUrl }}
{{- end }}
{{- if $s.redisPasswordFromSecret }}
- name: CHAT_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chat-lib.secretName" . }}
      key: {{ $s.keys.redisPassword }}
{{- end }}
{{- $g := include "chat-lib.global" . | fromYaml }}
{{- with concat ($g.extraEnv | default list) (.Values.extraEnv | default list) }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "chat-lib.envFrom" -}}
- configMapRef:
    name: {{ include "chat-lib.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}
