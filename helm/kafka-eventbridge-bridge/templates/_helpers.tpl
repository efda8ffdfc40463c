{{/* Names and labels. */}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bridge.labels" -}}
helm.sh/chart: {{ include "bridge.chart" . }}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: bridge
{{- end -}}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bridge.configMapName" -}}
{{- if .Values.existingConfigMap -}}
{{- .Values.existingConfigMap -}}
{{- else -}}
{{- printf "%s-config" (include "bridge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The HTTP port of /healthz, /readyz and /metrics: config.observability.port (default 9464). */}}
{{- define "bridge.httpPort" -}}
{{- dig "observability" "port" 9464 .Values.config | int -}}
{{- end -}}

{{/* The drain deadline: config.pipeline.shutdown_timeout_s (default 30), rounded up. */}}
{{- define "bridge.shutdownTimeout" -}}
{{- dig "pipeline" "shutdown_timeout_s" 30 .Values.config | float64 | ceil | int -}}
{{- end -}}

{{/* A librdkafka property of config.kafka.properties, or "". */}}
{{- define "bridge.kafkaProperty" -}}
{{- $props := dig "kafka" "properties" dict .root.Values.config -}}
{{- index $props .key | default "" -}}
{{- end -}}

{{/* The kind of the workload: Deployment, or StatefulSet (workload: statefulset). */}}
{{- define "bridge.workloadKind" -}}
{{- ternary "StatefulSet" "Deployment" (eq .Values.workload "statefulset") -}}
{{- end -}}

{{/* Values the schema cannot express; each failure names the value and the fix. */}}
{{- define "bridge.validate" -}}
{{- if or (dig "kafka" "group_instance_id" "" .Values.config) (index (dig "kafka" "properties" dict .Values.config) "group.instance.id") -}}
{{- fail "config.kafka.group_instance_id (or kafka.properties group.instance.id) is set in the values: every pod would use the same id, and the broker fences all but one. Use workload: statefulset, which gives each pod its own (its name)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled -}}
{{- fail "autoscaling.enabled and keda.enabled are both true: KEDA creates its own HorizontalPodAutoscaler; enable only one" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) -}}
{{- fail "autoscaling.enabled needs autoscaling.targetCPUUtilizationPercentage or autoscaling.targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs service.enabled: the ServiceMonitor scrapes through the Service" -}}
{{- end -}}
{{- if not (dig "observability" "enabled" true .Values.config) -}}
{{- fail "config.observability.enabled is false: the liveness/readiness probes and /metrics need it; leave it true" -}}
{{- end -}}
{{- if or (dig "kafka" "sasl_password" "" .Values.config) (index (dig "kafka" "properties" dict .Values.config) "sasl.password") -}}
{{- fail "config.kafka.sasl_password (or kafka.properties sasl.password) is set in the values: it would be stored in a ConfigMap. Put the credentials in a Secret and name it in kafka.sasl.existingSecret" -}}
{{- end -}}
{{- if dig "alibaba" "access_key_secret" "" .Values.config -}}
{{- fail "config.alibaba.access_key_secret is set in the values: it would be stored in a ConfigMap. Put it in a Secret and pass it as BRIDGE_ALIBABA__ACCESS_KEY_SECRET with env[].valueFrom.secretKeyRef" -}}
{{- end -}}
{{- end -}}

{{/* Probe timings from a probe's values (everything but `enabled`). */}}
{{- define "bridge.probeTimings" -}}
{{- $timings := omit . "enabled" -}}
{{- toYaml $timings -}}
{{- end -}}
