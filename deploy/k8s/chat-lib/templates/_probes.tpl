{{/*
Probes on the endpoints every service serves: /healthz says the process
answers HTTP (liveness, startup); /readyz is 503 while draining or while Redis
or MongoDB do not answer (readiness). /readyz waits up to 2 s on the stores, so
its timeout must stay above that.
*/}}

{{- define "chat-lib.httpProbe" -}}
{{- $p := index . 1 -}}
httpGet:
  path: {{ index . 0 }}
  port: http
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "successThreshold" "failureThreshold" }}
{{- if hasKey $p $k }}
{{ $k }}: {{ index $p $k }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chat-lib.probes" -}}
{{- $p := .Values.probes -}}
{{- if $p.startup.enabled }}
startupProbe:
  {{- include "chat-lib.httpProbe" (list "/healthz" $p.startup) | nindent 2 }}
{{- end }}
livenessProbe:
  {{- include "chat-lib.httpProbe" (list "/healthz" $p.liveness) | nindent 2 }}
readinessProbe:
  {{- include "chat-lib.httpProbe" (list "/readyz" $p.readiness) | nindent 2 }}
{{- end }}

{{/* Lifecycle: a preStop sleep lets endpoints and proxies drop the pod before SIGTERM. */}}
{{- define "chat-lib.lifecycle" -}}
{{- $sleep := int (.Values.preStop.sleepSeconds | default 0) }}
{{- if gt $sleep 0 }}
lifecycle:
  preStop:
    {{- if .Values.preStop.useSleepAction }}
    sleep:
      seconds: {{ $sleep }}
    {{- else }}
    exec:
      command: ["sleep", {{ $sleep | quote }}]
    {{- end }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then SIGTERM and the drain
window (CHAT_DRAIN_SECONDS, over which the gateway closes sockets with 1012),
then the HTTP shutdown (drain + 5 s in the service) and store cleanup. The
computed value is preStop + ceil(drain) + shutdown.graceMarginSeconds; an
explicit terminationGracePeriodSeconds must exceed preStop + drain + 10 s.
*/}}
{{- define "chat-lib.terminationGracePeriodSeconds" -}}
{{- $cfg := include "chat-lib.config" . | fromYaml }}
{{- $drain := int (ceil (float64 (default 5 $cfg.drainSeconds))) }}
{{- $sleep := int (.Values.preStop.sleepSeconds | default 0) }}
{{- $floor := add $sleep $drain 10 }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- $v := int .Values.terminationGracePeriodSeconds }}
{{- if le $v $floor }}
{{- fail (printf "terminationGracePeriodSeconds=%d must exceed preStop.sleepSeconds (%d) + config.drainSeconds (%d) + 10 s for shutdown = %d" $v $sleep $drain $floor) }}
{{- end }}
{{- $v }}
{{- else }}
{{- $margin := int (.Values.shutdown.graceMarginSeconds | default 15) }}
{{- if le $margin 10 }}
{{- fail (printf "shutdown.graceMarginSeconds=%d must be more than 10" $margin) }}
{{- end }}
{{- add $sleep $drain $margin }}
{{- end }}
{{- end }}
