{{/* Chart name, 63 characters at most. */}}
{{- define "prenv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name, with the chart name unless it contains it. */}}
{{- define "prenv.fullname" -}}
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

{{- define "prenv.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "prenv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prenv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "prenv.labels" -}}
helm.sh/chart: {{ include "prenv.chart" . }}
{{ include "prenv.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: prenv
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "prenv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prenv.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "prenv.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "prenv.leaseName" -}}
{{- default (printf "%s-leader" (include "prenv.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The webhook Secret's name: an existing one, or the chart's own. */}}
{{- define "prenv.webhookSecretName" -}}
{{- default (printf "%s-webhook" (include "prenv.fullname" .)) .Values.webhook.existingSecret }}
{{- end }}

{{/* The GitHub Secret's name: an existing one, or the chart's own. */}}
{{- define "prenv.githubSecretName" -}}
{{- default (printf "%s-github" (include "prenv.fullname" .)) .Values.github.existingSecret }}
{{- end }}

{{/* How prenv authenticates to GitHub: token, app or none. */}}
{{- define "prenv.githubAuth" -}}
{{- $g := .Values.github }}
{{- if $g.auth }}
{{- if not (has $g.auth (list "token" "app" "none")) }}
{{- fail (printf "github.auth must be token, app or none, not %q" $g.auth) }}
{{- end }}
{{- $g.auth }}
{{- else if or $g.app.id $g.app.privateKey }}
{{- "app" }}
{{- else if $g.token }}
{{- "token" }}
{{- else if $g.existingSecret }}
{{- fail "github.existingSecret is set: also set github.auth to token or app" }}
{{- else }}
{{- "none" }}
{{- end }}
{{- end }}

{{/* Whether the chart creates the GitHub Secret (credentials given inline). */}}
{{- define "prenv.githubSecretCreate" -}}
{{- $g := .Values.github }}
{{- if and (not $g.existingSecret) (ne (include "prenv.githubAuth" .) "none") }}true{{ end }}
{{- end }}

{{/* PRENV_MAX_QUOTA: resource=quantity pairs, sorted by resource. */}}
{{- define "prenv.maxQuota" -}}
{{- $pairs := list }}
{{- range $k, $v := .Values.config.maxQuota }}
{{- $pairs = append $pairs (printf "%s=%s" $k (include "prenv.scalar" $v)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* host:port for a listener; IPv6 addresses in brackets. */}}
{{- define "prenv.listen" -}}
{{- $addr := .addr }}
{{- if and (contains ":" $addr) (not (hasPrefix "[" $addr)) }}
{{- $addr = printf "[%s]" $addr }}
{{- end }}
{{- printf "%s:%v" $addr .port }}
{{- end }}

{{/* A value as text; YAML numbers (float64 to Helm) without an exponent when whole. */}}
{{- define "prenv.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- . | int64 | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/* The ClusterRole bound to each preview's deployer: a given one, or the chart's own. */}}
{{- define "prenv.deployerRole" -}}
{{- default (printf "%s-deployer" (include "prenv.fullname" .)) .Values.config.deployerClusterRole }}
{{- end }}
