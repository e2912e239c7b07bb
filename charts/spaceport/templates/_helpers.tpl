{{/* Names and labels shared by every template. */}}

{{- define "spaceport.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* 52, not 63: the StatefulSet controller appends "-<hash>" to its name in the controller-revision-hash label. */}}
{{- define "spaceport.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "spaceport.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spaceport.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "spaceport.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "spaceport.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spaceport
{{- end -}}

{{- define "spaceport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spaceport.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "spaceport.peeringName" -}}
{{- default (include "spaceport.fullname" .) .Values.operator.peeringName -}}
{{- end -}}

{{/* Namespaces watched in namespaced mode, as a list (default: the release namespace). */}}
{{- define "spaceport.watchNamespaces" -}}
{{- if .Values.rbac.watchNamespaces -}}
{{- toJson (uniq .Values.rbac.watchNamespaces) -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "spaceport.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "spaceport.stageImage" -}}
{{- printf "%s:%s" .Values.stageImage.repository (default .Chart.AppVersion .Values.stageImage.tag) -}}
{{- end -}}

{{/* SPACEPORT_DEFAULT_RESOURCES: each pool's resources with its GPU count added to limits. */}}
{{- define "spaceport.stageResources" -}}
{{- $out := dict -}}
{{- range $stage := list "sfm" "train" "compress" -}}
{{- $pool := index $.Values.stages $stage -}}
{{- $res := deepCopy (default dict $pool.resources) -}}
{{- if gt (int $pool.gpus) 0 -}}
{{- $limits := default dict $res.limits -}}
{{- $_ := set $limits $.Values.gpuResourceName (int $pool.gpus) -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- $_ := set $out $stage $res -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* SPACEPORT_STAGE_POOLS: where each stage runs (image, nodeSelector, tolerations). */}}
{{- define "spaceport.stagePools" -}}
{{- $out := dict -}}
{{- range $stage := list "sfm" "train" "compress" -}}
{{- $pool := index $.Values.stages $stage -}}
{{- $entry := dict "image" (default (include "spaceport.stageImage" $) $pool.image) "nodeSelector" (default dict $pool.nodeSelector) "tolerations" (default list $pool.tolerations) -}}
{{- $_ := set $out $stage $entry -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Port of kopf's liveness endpoint (/healthz), passed as SPACEPORT_HEALTH_ENDPOINT. */}}
{{- define "spaceport.healthPort" -}}
{{- if eq (int .Values.metrics.port) (int .Values.operator.healthPort) -}}
{{- fail (printf "metrics.port %d is taken by the operator's liveness endpoint (operator.healthPort): choose another port" (int .Values.metrics.port)) -}}
{{- end -}}
{{- .Values.operator.healthPort -}}
{{- end -}}
