{{/* The Deployment of one chat service. */}}
{{- define "chat-lib.deployment" -}}
{{- $component := include "chat-lib.component" . }}
{{- $img := include "chat-lib.imageValues" . | fromYaml }}
{{- $s := include "chat-lib.secrets" . | fromYaml }}
{{- $jwtFile := and .Values.needs.jwt (include "chat-lib.jwtUsesPublicKey" .) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "chat-lib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "chat-lib.labels" . | nindent 4 }}
  {{- with .Values.deploymentAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: {{ .Values.revisionHistoryLimit | default 5 }}
  {{- with .Values.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "chat-lib.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "chat-lib.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "chat-lib.configData" . | sha256sum }}
        {{- if .Values.prometheusScrapeAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .Values.port | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "chat-lib.serviceAccountName" . }}
      automountServiceAccountToken: {{ .Values.serviceAccount.automountToken | default false }}
      # Service links would inject e.g. CHAT_GATEWAY_PORT=tcp://... for a
      # Service named chat-gateway, which the services read as settings.
      enableServiceLinks: false
      {{- with include "chat-lib.imagePullSecrets" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with .Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- include "chat-lib.podSecurityContext" . | nindent 8 }}
      terminationGracePeriodSeconds: {{ include "chat-lib.terminationGracePeriodSeconds" . }}
      containers:
        - name: {{ $component }}
          image: {{ include "chat-lib.image" . | quote }}
          imagePullPolicy: {{ $img.pullPolicy | default "IfNotPresent" }}
          {{- with .Values.command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.port }}
              protocol: TCP
          env:
            {{- include "chat-lib.env" . | trim | nindent 12 }}
          envFrom:
            {{- include "chat-lib.envFrom" . | trim | nindent 12 }}
          {{- include "chat-lib.probes" . | trim | nindent 10 }}
          {{- with include "chat-lib.lifecycle" . | trim }}
          {{- . | nindent 10 }}
          {{- end }}
          resources:
            {{- required "resources must be set" .Values.resources | toYaml | nindent 12 }}
          securityContext:
            {{- include "chat-lib.containerSecurityContext" . | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $jwtFile }}
            - name: jwt-public-key
              mountPath: {{ include "chat-lib.jwtPublicKeyDir" . }}
              readOnly: true
            {{- end }}
            {{- with .Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            {{- with .Values.tmpVolume.sizeLimit }}
            sizeLimit: {{ . }}
            {{- end }}
            {{- with .Values.tmpVolume.medium }}
            medium: {{ . }}
            {{- end }}
        {{- if $jwtFile }}
        - name: jwt-public-key
          secret:
            secretName: {{ include "chat-lib.secretName" . }}
            defaultMode: 0440
            items:
              - key: {{ $s.keys.jwtPublicKey }}
                path: {{ include "chat-lib.jwtPublicKeyFile" . }}
        {{- end }}
        {{- with .Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .Values.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml .Values.topologySpreadConstraints | nindent 8 }}
      {{- else if .Values.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "chat-lib.selectorLabels" . | nindent 14 }}
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "chat-lib.selectorLabels" . | nindent 14 }}
      {{- end }}
{{- end }}
