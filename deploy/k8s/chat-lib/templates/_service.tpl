{{- define "chat-lib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "chat-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "chat-lib.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type | default "ClusterIP" }}
  {{- with .Values.service.sessionAffinity }}
  sessionAffinity: {{ . }}
  {{- end }}
  ports:
    - name: http
      port: {{ .Values.service.port | default .Values.port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
  selector:
    {{- include "chat-lib.selectorLabels" . | nindent 4 }}
{{- end }}
