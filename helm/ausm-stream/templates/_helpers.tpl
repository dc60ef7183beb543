{{/* The release's name for every resource (at most 40 characters: KubeRay adds suffixes). */}}
{{- define "ausm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ausm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ausm.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ausm.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{/* What every Ray container needs: the configuration file and the secrets, as
     AUSM_SECTION__KEY variables (pipeline/config.py), wherever Serve builds the app. */}}
{{- define "ausm.env" -}}
- name: AUSM_STORAGE__ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret.name }}, key: {{ .Values.existingSecret.accessKeyKey }}}
- name: AUSM_STORAGE__SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret.name }}, key: {{ .Values.existingSecret.secretKeyKey }}}
- name: AUSM_API__TOKEN
  valueFrom:
    secretKeyRef: {name: {{ .Values.existingSecret.name }}, key: {{ .Values.existingSecret.apiTokenKey }}}
{{- end -}}

{{- define "ausm.configVolume" -}}
- name: pipeline-config
  configMap:
    name: {{ include "ausm.fullname" . }}-config
{{- end -}}

{{- define "ausm.configMount" -}}
- name: pipeline-config
  mountPath: /etc/ausm-stream
  readOnly: true
{{- end -}}
