{{/*
Hardened defaults; .Values.podSecurityContext / .Values.securityContext are
merged over them key by key. The image runs as uid/gid 10001.
*/}}

{{- define "chat-lib.podSecurityContext" -}}
{{- $defaults := dict
  "runAsNonRoot" true
  "runAsUser" 10001
  "runAsGroup" 10001
  "fsGroup" 10001
  "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- include "chat-lib.merged" (list $defaults .Values.podSecurityContext) }}
{{- end }}

{{- define "chat-lib.containerSecurityContext" -}}
{{- $defaults := dict
  "runAsNonRoot" true
  "runAsUser" 10001
  "runAsGroup" 10001
  "privileged" false
  "allowPrivilegeEscalation" false
  "readOnlyRootFilesystem" true
  "capabilities" (dict "drop" (list "ALL"))
  "seccompProfile" (dict "type" "RuntimeDefault") }}
{{- include "chat-lib.merged" (list $defaults .Values.securityContext) }}
{{- end }}
