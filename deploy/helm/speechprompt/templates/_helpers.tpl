{{/* Names and labels. */}}
{{- define "speechprompt.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "speechprompt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "speechprompt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "speechprompt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of a pod template: the selector labels plus the chart's. */}}
{{- define "speechprompt.podLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* A value as an environment string: whole numbers without exponent (YAML numbers arrive as float64). */}}
{{- define "speechprompt.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The server pods (Deployment, Service, PDB, NetworkPolicy "from"). */}}
{{- define "speechprompt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "speechprompt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "speechprompt.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "speechprompt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "speechprompt.redisName" -}}
{{- printf "%s-redis" (include "speechprompt.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "speechprompt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "speechprompt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the admin token, and its key. */}}
{{- define "speechprompt.adminSecretName" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else -}}
{{- printf "%s-admin" (include "speechprompt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "speechprompt.adminTokenEnabled" -}}
{{- if or .Values.adminToken.existingSecret .Values.adminToken.generate -}}true{{- end -}}
{{- end -}}

{{/* SPEECHPROMPT_BUNDLE_DIR inside the container. */}}
{{- define "speechprompt.bundleDir" -}}
{{- if eq .Values.backbone.source "image" -}}
/models/{{ .Values.backbone.builtin }}
{{- else if eq .Values.backbone.source "pvc" -}}
{{- if .Values.backbone.pvc.subPath -}}/bundles/{{ .Values.backbone.pvc.subPath }}{{- else -}}/bundles{{- end -}}
{{- else -}}
/bundle
{{- end -}}
{{- end -}}

{{/* The demo task folder that matches the backbone. */}}
{{- define "speechprompt.seedFolder" -}}
{{- if .Values.seedDemoTasks.folder -}}
{{- .Values.seedDemoTasks.folder -}}
{{- else if eq .Values.backbone.builtin "pgslm-default" -}}
/prompts_store_pgslm
{{- else -}}
/prompts_store
{{- end -}}
{{- end -}}

{{- define "speechprompt.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* Checks that cannot be said in values.schema.json. */}}
{{- define "speechprompt.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled -}}
{{- fail "autoscaling.enabled and keda.enabled are both true: KEDA creates its own HPA; turn one off" -}}
{{- end -}}
{{- if and (not .Values.redis.enabled) (not .Values.redis.externalUrl) (not .Values.redis.externalUrlSecret.name) -}}
{{- fail "redis.enabled is false: set redis.externalUrl or redis.externalUrlSecret.name (the task store every replica shares)" -}}
{{- end -}}
{{- if and (eq .Values.backbone.source "pvc") (not .Values.backbone.pvc.claimName) -}}
{{- fail "backbone.source is pvc: set backbone.pvc.claimName" -}}
{{- end -}}
{{- if and (eq .Values.backbone.source "init") (not .Values.backbone.init.command) -}}
{{- fail "backbone.source is init: set backbone.init.command (it must write a bundle into /bundle)" -}}
{{- end -}}
{{- if and .Values.seedDemoTasks.enabled (not (include "speechprompt.adminTokenEnabled" .)) -}}
{{- fail "seedDemoTasks needs an admin token (adminToken.existingSecret or adminToken.generate)" -}}
{{- end -}}
{{- end -}}
