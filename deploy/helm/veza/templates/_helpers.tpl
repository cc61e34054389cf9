{{/* Chart name, truncated for label values. */}}
{{- define "veza.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; leaves room for the "-media"/"-migrate" suffixes. */}}
{{- define "veza.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "veza.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "veza.labels" -}}
helm.sh/chart: {{ include "veza.chart" . }}
app.kubernetes.io/name: {{ include "veza.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: veza
{{- end }}

{{/* Selector labels of one component: include "veza.selectorLabels" (list . "api") */}}
{{- define "veza.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "veza.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "veza.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "veza.secretName" -}}
{{- default (printf "%s-secrets" (include "veza.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "veza.configName" -}}
{{- printf "%s-config" (include "veza.fullname" .) }}
{{- end }}

{{- define "veza.jwtIssuer" -}}
{{- default .Values.publicUrl .Values.jwtIssuer }}
{{- end }}

{{/* Environment from the Secret, shared by every Veza container. */}}
{{- define "veza.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "veza.secretName" . }}
      key: database-url
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "veza.secretName" . }}
      key: redis-url
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "veza.secretName" . }}
      key: nats-url
- name: VEZA_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "veza.secretName" . }}
      key: cluster-secret
{{- if .Values.turn.urls }}
- name: VEZA_TURN_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "veza.secretName" . }}
      key: turn-secret
{{- end }}
{{- end }}

{{/* Pod annotations: config/secret checksums (roll pods on change) and Prometheus scraping. */}}
{{- define "veza.podAnnotations" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 -}}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
{{- if not $root.Values.secrets.existingSecret }}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
{{- end }}
{{- if $root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Volumes every Veza pod mounts: writable /data and /tmp (the root filesystem is read-only)
     and the JWT key file. */}}
{{- define "veza.volumes" -}}
- name: data
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: jwt-keys
  secret:
    secretName: {{ include "veza.secretName" . }}
    defaultMode: 0440
    items:
      - key: jwt-keys.json
        path: jwt-keys.json
{{- end }}

{{- define "veza.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
- name: jwt-keys
  mountPath: {{ .Values.jwtKeysMountPath }}
  readOnly: true
{{- end }}

{{/* Checks that fail the render with a useful message. */}}
{{- define "veza.validate" -}}
{{- if not .Values.secrets.existingSecret }}
{{- if not .Values.secrets.databaseUrl }}{{ fail "set secrets.databaseUrl (postgres://…) or secrets.existingSecret" }}{{ end }}
{{- if not (or (hasPrefix "postgres://" .Values.secrets.databaseUrl) (hasPrefix "postgresql://" .Values.secrets.databaseUrl)) }}{{ fail "secrets.databaseUrl must start with postgres:// (a cluster cannot share SQLite)" }}{{ end }}
{{- if not .Values.secrets.redisUrl }}{{ fail "set secrets.redisUrl (redis://…) or secrets.existingSecret" }}{{ end }}
{{- if not .Values.secrets.natsUrl }}{{ fail "set secrets.natsUrl (nats://…) or secrets.existingSecret" }}{{ end }}
{{- if lt (len .Values.secrets.clusterSecret) 16 }}{{ fail "set secrets.clusterSecret (a long random string, >= 16 characters) or secrets.existingSecret" }}{{ end }}
{{- if not .Values.secrets.jwtKeysJson }}{{ fail "set secrets.jwtKeysJson: create the key file with `veza keys rotate --data-dir /tmp/k` and pass --set-file secrets.jwtKeysJson=/tmp/k/jwt-keys.json (or use secrets.existingSecret)" }}{{ end }}
{{- if and .Values.turn.urls (lt (len .Values.secrets.turnSecret) 16) }}{{ fail "turn.urls is set: secrets.turnSecret must be set too (>= 16 characters)" }}{{ end }}
{{- end }}
{{- if not (or (hasPrefix "http://" .Values.publicUrl) (hasPrefix "https://" .Values.publicUrl)) }}{{ fail "publicUrl must start with http:// or https://" }}{{ end }}
{{- if not (gt (int .Values.media.terminationGracePeriodSeconds) (int .Values.media.drainTimeoutSecs)) }}{{ fail "media.terminationGracePeriodSeconds must exceed media.drainTimeoutSecs, or Kubernetes kills draining nodes" }}{{ end }}
{{- if not (has .Values.media.kind (list "StatefulSet" "DaemonSet")) }}{{ fail "media.kind must be StatefulSet or DaemonSet" }}{{ end }}
{{- end }}
