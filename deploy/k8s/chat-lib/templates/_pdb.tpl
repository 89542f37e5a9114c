{{/* PodDisruptionBudget (policy/v1): minAvailable when set, else maxUnavailable. */}}
{{- define "chat-lib.pdb" -}}
{{- $p := .Values.podDisruptionBudget }}
{{- if $p.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "chat-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "chat-lib.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable | default 1 }}
  {{- end }}
  {{- with $p.unhealthyPodEvictionPolicy }}
  unhealthyPodEvictionPolicy: {{ . }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "chat-lib.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
