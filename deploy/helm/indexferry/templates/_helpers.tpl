{{/* The release's resource names: <release>-indexferry, cut to Kubernetes' 63 characters. */}}
{{- define "indexferry.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "indexferry.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "indexferry.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "indexferry.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "indexferry.migration" -}}
{{- required "migration.name is required: the recipe's name" .Values.migration.name -}}
{{- end -}}

{{- define "indexferry.secretName" -}}
{{- .Values.credentials.existingSecret | default (printf "%s-credentials" (include "indexferry.fullname" .)) -}}
{{- end -}}

{{/* The environment of every indexferry container: JSON logs, credentials, overrides. */}}
{{- define "indexferry.env" -}}
- name: INDEXFERRY_LOG_FORMAT
  value: json
{{- range $k, $v := .Values.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{- define "indexferry.envFrom" -}}
- secretRef:
    name: {{ include "indexferry.secretName" . }}
    optional: true
{{- end -}}

{{/* The state volume of `run`'s pod 0, which the rollover Job mounts too. */}}
{{- define "indexferry.stateClaim" -}}
state-{{ include "indexferry.fullname" . }}-run-0
{{- end -}}
