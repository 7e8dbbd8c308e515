{{/* The chart's name, or nameOverride. */}}
{{- define "meshcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects' base name (fullnameOverride, or RELEASE-meshcast unless the release name holds the chart's). */}}
{{- define "meshcast.fullname" -}}
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

{{/* Labels of every object, but its component. */}}
{{- define "meshcast.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "meshcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the meshcast nodes' objects. */}}
{{- define "meshcast.labels" -}}
{{ include "meshcast.commonLabels" . }}
app.kubernetes.io/component: node
{{- end }}

{{/* Labels of the bundled Redis's objects. */}}
{{- define "meshcast.redisLabels" -}}
{{ include "meshcast.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* Labels selecting the meshcast nodes. */}}
{{- define "meshcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{/* Labels selecting the bundled Redis. */}}
{{- define "meshcast.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "meshcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The Secret holding the cluster secret, publish keys and admin token. */}}
{{- define "meshcast.secretName" -}}
{{- default (include "meshcast.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The meshcast image. */}}
{{- define "meshcast.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The bundled Redis's Service (headless: its one pod's address). */}}
{{- define "meshcast.redisName" -}}
{{- printf "%s-redis" (include "meshcast.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the Redis URL comes from: "bundled", "url" or "secret"; fails without one. */}}
{{- define "meshcast.redisSource" -}}
{{- if .Values.redis.enabled }}bundled
{{- else if .Values.redis.existingSecret }}secret
{{- else if .Values.redis.url }}url
{{- else }}{{ fail "redis: set redis.url or redis.existingSecret, or redis.enabled=true: the nodes of a cluster share a Redis" }}
{{- end }}
{{- end }}

{{/* The pod's terminationGracePeriodSeconds: the drain grace and a margin to exit. */}}
{{- define "meshcast.terminationGrace" -}}
{{- add (int .Values.config.drainGraceSeconds) (int .Values.config.terminationGraceMarginSeconds) }}
{{- end }}
